{{/* The chart's name, or nameOverride: the app.kubernetes.io/name label. */}}
{{- define "chroma-sync-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, or fullnameOverride, at most 63 characters (a DNS label). */}}
{{- define "chroma-sync-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "chroma-sync-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chroma-sync-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Label values may not hold "+" (a SemVer build suffix): "_" as in Helm's scaffold. */}}
{{- define "chroma-sync-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "chroma-sync-operator.labels" -}}
{{ include "chroma-sync-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | replace "+" "_" | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "chroma-sync-operator.chart" . }}
{{- end -}}

{{- define "chroma-sync-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "chroma-sync-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "chroma-sync-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
What the operator does with SyncSources, Secrets and Events, in one place for the ClusterRole
(all namespaces) and the per-namespace Roles. Nothing here writes a Secret or reads one by name.
*/}}
{{- define "chroma-sync-operator.clusterRules" -}}
# ClusterChromaSyncConnections: watched and checked like the namespaced kind; the namespaces'
# labels (metadata only) say which namespaces a cluster connection admits.
- apiGroups: [chromasync.dev]
  resources: [clusterchromasyncconnections]
  verbs: [get, list, watch]
- apiGroups: [chromasync.dev]
  resources: [clusterchromasyncconnections/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
# Whether a deletion comes from the deletion of the kind's CRD (then no source is deleted in
# Chroma): the two CRDs with finalizers, by name only (a watch of one name, a GET when asked).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  resourceNames: [syncsources.chromasync.dev, syncruns.chromasync.dev]
  verbs: [get, list, watch]
{{- end -}}

{{- define "chroma-sync-operator.rules" -}}
# Watch SyncSources into the cache; patch them to add or remove the finalizer and the
# create-pending mark (one resourceVersion-guarded patch before every create). No create,
# update or delete: the operator never makes or removes a SyncSource.
- apiGroups: [chromasync.dev]
  resources: [syncsources]
  verbs: [get, list, watch, patch]
# Record sourceId, conditions and errors.
- apiGroups: [chromasync.dev]
  resources: [syncsources/status]
  verbs: [patch]
# Follow SyncRuns: watch them, patch the finalizer and create-pending mark, record the run.
# (A run reads its SyncSource with get, above.) spec.sync creates the runs it asks for and
# deletes those beyond its history limits.
- apiGroups: [chromasync.dev]
  resources: [syncruns]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [chromasync.dev]
  resources: [syncruns/status]
  verbs: [patch]
# Read the Chroma tokens that SyncSources reference, through a watch cache (no get: a
# SyncSource author cannot make the operator fetch an arbitrary Secret by name).
- apiGroups: [""]
  resources: [secrets]
  verbs: [list, watch]
# Check ChromaSyncConnections (an authenticated call each) and record what it found. A
# connection's CA bundle may be a ConfigMap key, read by a list of its one name.
# spec.sync.publishTo reads its ConfigMap the same way (a list of its one name: no get), and
# writes it with server-side apply: patch, and create for the first write (an apply that
# creates needs both). No update or delete: an owned ConfigMap goes with its SyncSource through
# the garbage collector, and one the SyncSource does not own is never written.
- apiGroups: [chromasync.dev]
  resources: [chromasyncconnections]
  verbs: [get, list, watch]
- apiGroups: [chromasync.dev]
  resources: [chromasyncconnections/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, create, patch]
# Tell people what status does not: a replaced, adopted or retained source, a failure. Each
# Event is a new one (no series to patch).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end -}}
