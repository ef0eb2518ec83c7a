from audit.models import AuditEvent


def events_of(org):
    return AuditEvent.objects.filter(organization=org).order_by("-event_time", "-id")
