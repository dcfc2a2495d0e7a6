"""Sagas driven to a given stage along the happy path."""

from __future__ import annotations

from payments.contracts.participants import AssessRisk, CommitFunds, ReserveFunds, SubmitToPartner
from tests.unit.saga.harness import (
    Saga,
    commit_reply,
    initiate,
    reservation_reply,
    risk_reply,
    submission_reply,
)


def awaiting_risk() -> Saga:
    saga = Saga()
    saga.handle(initiate())
    return saga


def reserving_funds() -> Saga:
    saga = awaiting_risk()
    saga.handle(risk_reply(saga.last_command(AssessRisk)))
    return saga


def submitted() -> Saga:
    saga = reserving_funds()
    saga.handle(reservation_reply(saga.last_command(ReserveFunds)))
    return saga


def committing() -> Saga:
    saga = submitted()
    saga.handle(submission_reply(saga.last_command(SubmitToPartner)))
    return saga


def settled() -> Saga:
    saga = committing()
    saga.handle(commit_reply(saga.last_command(CommitFunds)))
    return saga
