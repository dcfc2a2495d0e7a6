"""The HTTP intake: upstream systems that cannot produce to Kafka send their commands over HTTPS.

`POST /v1/payments`, `POST /v1/payments/{id}/cancel` and `POST /v1/payments/{id}/refunds` turn an
authenticated, validated request into the same Avro command a Kafka publisher sends to
`payments.commands`, and answer 202 once Kafka has acknowledged it (acks=all, idempotent producer).
`GET /v1/payments/{id}` reads the payment-status read model. docs/http-intake.md describes the API;
`docs/openapi.json` is its OpenAPI document (`python -m intake.http.openapi` writes it).

Modules: `config` (what the process is given), `auth` (OAuth2 bearer JWTs against a JWKS), `ratelimit`
(a token bucket per client), `problems` (RFC 9457 error bodies), `models` (request and response bodies),
`idempotency` (request fingerprints and the PostgreSQL store of responses), `producer` (Kafka),
`status` (the read model), `services` (what the routes use), `middleware` (the body limit), `routes`,
`handlers` (errors as problems), `app` (the FastAPI application: the order of the checks), `server` (uvicorn,
for `payments run http-intake`), `openapi` (the checked-in document).
"""
