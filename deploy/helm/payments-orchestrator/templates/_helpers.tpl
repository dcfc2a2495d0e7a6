{{/* Names and labels. */}}
{{- define "payments.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "payments.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: payments
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "payments.serviceAccountName" -}}
{{- default (include "payments.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "payments.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{- define "payments.sasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end -}}
{{- end -}}

{{/*
Every long-running process, as a YAML list under `processes`: its name, Kubernetes component name, the
`payments` arguments, its consumer group (empty: not a consumer), Kafka user (the principals of ops/acls.py
and deploy/kafka/acls.json: dashes for underscores, as Kubernetes names, Strimzi's KafkaUsers among them,
must be), whether it serves the health port, whether it needs the database, and its configuration (processDefaults with the entry's own keys on top). The chart fails here if a
consumer would have more replicas than the topics have partitions: the extra ones would sit idle, unready.
*/}}
{{- define "payments.processes" -}}
{{- $prefix := .Values.kafka.topicPrefix -}}
{{- $partitions := int .Values.kafka.partitions -}}
processes:
{{- range $name, $entry := .Values.services }}
- name: {{ $name }}
  component: {{ $name }}
  args: [run, {{ $name }}]
  group: {{ printf "%s%s" $prefix $name | quote }}
  kafkaUser: {{ printf "payments-%s" $name }}
  health: true
  database: false
  config: {{ mergeOverwrite (deepCopy $.Values.processDefaults) (default dict $entry) | toJson }}
{{- end }}
{{- range $name, $entry := .Values.projections }}
{{- $dashed := $name | replace "_" "-" }}
- name: {{ printf "projection-%s" $name }}
  component: {{ printf "projection-%s" $dashed }}
  args: [run, projection, {{ $name }}]
  group: {{ printf "%sprojection-%s" $prefix $name | quote }}
  kafkaUser: {{ printf "payments-projection-%s" $dashed }}
  health: true
  database: true
  config: {{ mergeOverwrite (deepCopy $.Values.processDefaults) (default dict $entry) | toJson }}
{{- end }}
{{- if .Values.httpIntake.enabled }}
{{- $http := pick .Values.httpIntake "replicas" "resources" "extraEnv" "nodeSelector" "tolerations" "affinity" }}
- name: http-intake
  component: http-intake
  args: [run, http-intake]
  group: ""
  kafkaUser: payments-http-intake
  health: false  # serves no PAYMENTS_HEALTH_PORT: probed on its HTTP port
  database: true
  config: {{ mergeOverwrite (deepCopy .Values.processDefaults) $http | toJson }}
{{- end }}
{{- end -}}

{{/* The processes, parsed, checked against the partition count. */}}
{{- define "payments.processList" -}}
{{- $list := (include "payments.processes" . | fromYaml).processes -}}
{{- $partitions := int .Values.kafka.partitions -}}
{{- range $list -}}
{{- if .group -}}
{{- if gt (int .config.replicas) $partitions -}}
{{- fail (printf "%s: replicas %d exceed kafka.partitions %d (a consumer group cannot use more)" .name (int .config.replicas) $partitions) -}}
{{- end -}}
{{- if and $.Values.autoscaling.enabled (gt (int .config.autoscaling.maxReplicas) $partitions) -}}
{{- fail (printf "%s: autoscaling.maxReplicas %d exceed kafka.partitions %d (a consumer group cannot use more)" .name (int .config.autoscaling.maxReplicas) $partitions) -}}
{{- end -}}
{{- if and $.Values.autoscaling.enabled (gt (int .config.autoscaling.minReplicas) (int .config.autoscaling.maxReplicas)) -}}
{{- fail (printf "%s: autoscaling.minReplicas above maxReplicas" .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- dict "processes" $list | toJson -}}
{{- end -}}

{{/* The Secret and key holding Kafka user `user`'s SASL password. */}}
{{- define "payments.saslPasswordRef" -}}
{{- $sasl := .root.Values.kafka.sasl -}}
{{- if $sasl.secretPerUser -}}
name: {{ .user }}
key: {{ $sasl.passwordKey }}
{{- else -}}
name: {{ required "kafka.sasl.existingSecret is required with a SASL_* protocol" $sasl.existingSecret }}
key: {{ .user }}
{{- end -}}
{{- end -}}

{{/* The Secret holding user `user`'s client certificate and key (mutual TLS). */}}
{{- define "payments.clientCertSecret" -}}
{{- $cert := .root.Values.kafka.tls.clientCert -}}
{{- if $cert.secretPerUser }}{{ .user }}{{ else }}{{ required "kafka.tls.clientCert.existingSecret is required with clientCert.enabled" $cert.existingSecret }}{{ end -}}
{{- end -}}

{{/*
The env of a process that talks to Kafka as `user`: its identity, credentials and the database URL.
Arguments: root, user, database (bool).
*/}}
{{- define "payments.processEnv" -}}
- name: PAYMENTS_INSTANCE_ID  # unique per live pod: it names the transactional id
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
{{- if include "payments.sasl" .root }}
- name: KAFKA_SASL_USERNAME
  value: {{ .user | quote }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- include "payments.saslPasswordRef" . | nindent 6 }}
{{- end }}
{{- $cert := .root.Values.kafka.tls.clientCert }}
{{- if $cert.enabled }}
- name: KAFKA_SSL_CERTIFICATE_LOCATION
  value: {{ printf "/etc/payments/kafka-client/%s" $cert.certKey | quote }}
- name: KAFKA_SSL_KEY_LOCATION
  value: {{ printf "/etc/payments/kafka-client/%s" $cert.keyKey | quote }}
{{- if $cert.keyPasswordKey }}
- name: KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "payments.clientCertSecret" . }}
      key: {{ $cert.keyPasswordKey }}
{{- end }}
{{- end }}
{{- if .database }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required" .root.Values.database.existingSecret }}
      key: {{ .root.Values.database.urlKey }}
{{- end }}
{{- end -}}

{{/* Volumes for the Kafka CA and client certificate of `user`. Arguments: root, user. */}}
{{- define "payments.kafkaVolumes" -}}
{{- if .root.Values.kafka.tls.ca.existingSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .root.Values.kafka.tls.ca.existingSecret }}
    items: [{key: {{ .root.Values.kafka.tls.ca.key }}, path: ca.crt}]
{{- end }}
{{- if .root.Values.kafka.tls.clientCert.enabled }}
- name: kafka-client
  secret:
    secretName: {{ include "payments.clientCertSecret" . }}
{{- end }}
{{- end -}}

{{- define "payments.kafkaVolumeMounts" -}}
{{- if .Values.kafka.tls.ca.existingSecret }}
- {name: kafka-ca, mountPath: /etc/payments/kafka-ca, readOnly: true}
{{- end }}
{{- if .Values.kafka.tls.clientCert.enabled }}
- {name: kafka-client, mountPath: /etc/payments/kafka-client, readOnly: true}
{{- end }}
{{- end -}}

{{/* The ConfigMap's data: settings every process shares (variable names as in ops/settings.py). */}}
{{- define "payments.configData" -}}
KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
KAFKA_SASL_MECHANISM: {{ .Values.kafka.saslMechanism | quote }}
KAFKA_SSL_ENDPOINT_IDENTIFICATION: {{ .Values.kafka.endpointIdentification | quote }}
{{- if .Values.kafka.tls.ca.existingSecret }}
KAFKA_SSL_CA_LOCATION: /etc/payments/kafka-ca/ca.crt
{{- end }}
PAYMENTS_PARTITIONS: {{ .Values.kafka.partitions | quote }}
PAYMENTS_TOPIC_PREFIX: {{ .Values.kafka.topicPrefix | quote }}
PAYMENTS_HEALTH_PORT: {{ .Values.health.port | quote }}
PAYMENTS_STATE_DIR: /var/lib/payments/state
PAYMENTS_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
PAYMENTS_PARTNERS: {{ .Values.config.partners | quote }}
{{- if .Values.config.partnerEndpoints }}
PAYMENTS_PARTNER_ENDPOINTS: {{ .Values.config.partnerEndpoints | quote }}
{{- end }}
PAYMENTS_RISK_MODEL: {{ .Values.riskModels.active | quote }}
{{- if .Values.riskModels.candidate }}
PAYMENTS_RISK_CANDIDATE: {{ .Values.riskModels.candidate | quote }}
{{- end }}
{{- if .Values.riskModels.volume }}
PAYMENTS_RISK_MODELS_DIR: {{ .Values.riskModels.dir | quote }}
{{- end }}
PAYMENTS_TRACES_EXPORTER: {{ .Values.config.tracesExporter | quote }}
PAYMENTS_TRACES_SAMPLE_RATIO: {{ .Values.config.tracesSampleRatio | quote }}
{{- if .Values.config.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .Values.config.otlpEndpoint | quote }}
{{- end }}
{{- range $name, $value := .Values.config.extra }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "payments.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "payments.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end -}}
