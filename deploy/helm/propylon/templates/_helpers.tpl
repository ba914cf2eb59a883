{{- define "propylon.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "propylon.tokenSecret" -}}
{{ .Values.token.existingSecret | default (printf "%s-token" .Release.Name) }}
{{- end -}}

{{- define "propylon.gatewayId" -}}
{{ printf "%s-%s" .namespace .name }}
{{- end -}}
