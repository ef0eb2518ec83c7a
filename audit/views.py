"""The organization's audit log: filtered list with a volume chart, event detail, export."""

import json
import uuid
from pathlib import Path

from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString
from django.views.decorators.http import require_safe

from audit import chart_html, digests, export, selectors
from audit.chart import build_chart, chart_window
from audit.chart_counts import end_of_hour
from audit.filters import KNOWN_EVENT_SOURCES, KNOWN_REGIONS, AuditFilterForm
from audit.models import AuditEvent
from audit.pagination import InvalidCursor, decode_cursor, keyset_page
from audit.provenance import CUSTOMER_TRAIL, origin_of, provenance_label
from audit.request_context import client_ip, user_agent
from core.html import html_format, html_join
from orgs.permissions import org_admin_required

PAGE_SIZE = 50


@org_admin_required
def org_audit(request, org):
    """``/orgs/<id>/audit/``: the page, or with ``?format=csv|json`` the filtered export."""
    form = AuditFilterForm(request.GET)
    export_format = request.GET.get("format", "")
    if export_format:
        return _export(request, org, form, export_format)
    reconciliation = selectors.vendor_calls_by_day(org=org, now=timezone.now())
    context = {
        "org": org,
        "form": form,
        "known_sources": KNOWN_EVENT_SOURCES,
        "known_regions": KNOWN_REGIONS,
        "page": None,  # stays None while the filters are not valid
        "reconciliation": reconciliation,
        "reconciliation_rows": chart_html.render_calls_by_day(reconciliation),
    }
    if form.is_valid():
        filters = form.filters()
        try:
            after = _cursor(request, "after")
            before = None if after else _cursor(request, "before")
        except InvalidCursor:
            after = before = None
            context["cursor_error"] = (
                "That page link was not valid (perhaps it was cut short), so the newest "
                "events are shown."
            )
        events = selectors.search_events(org=org, filters=filters)
        window = chart_window(start=filters.start, end=filters.end, now=timezone.now())
        # Without a "to", the range is open: it counts this hour's events so far, whole, as
        # the list below shows them (rollup rows, no scan of the current hour's events).
        volume_end = window.end if filters.end else end_of_hour(window.end)
        volume = selectors.event_volume(
            org=org, filters=filters, start=window.start, end=volume_end, unit=window.unit
        )
        chart = build_chart(window, volume)
        page = keyset_page(events, size=PAGE_SIZE, after=after, before=before)
        rows = _rows(page.items, org=org, query=request.GET)
        context.update(
            filters=filters,
            page=page,
            rows=rows,
            rows_html=rows_html(rows),
            chart=chart,
            chart_meta=chart_html.caption(chart),
            chart_html=chart_html.render_chart(chart),
        )
    return render(request, "audit/event_list.html", context)


KIND_LABELS = dict(AuditEvent.Kind.choices)


def _rows(events, *, org, query) -> list[dict]:
    """What the table shows, formatted once here: per-row template tags (url, date, include)
    cost more than the queries on a 50-row page."""
    placeholder = str(uuid.UUID(int=0))
    detail_url = reverse("audit:event", args=[org.pk, placeholder])
    query = query.copy()
    query.pop("format", None)
    suffix = f"?{query.urlencode()}" if query else ""
    return [
        {
            "url": detail_url.replace(placeholder, str(event.event_id)) + suffix,
            "time": f"{event.event_time:%Y-%m-%d %H:%M:%S}",
            "name": event.event_name,
            "kind": event.kind,
            "kind_label": KIND_LABELS.get(event.kind, event.kind),
            **_provenance(event),
            "source": event.event_source,
            "principal": event.principal,
            "key_arn": event.key_arn,
            "key_short": event.key_arn[-36:][:8],
            "region": event.aws_region,
            "error": event.error_code,
        }
        for event in events
    ]


_ROW = (
    '<tr{error_class}><td class="audit-time"><time datetime="{time}Z">{time}</time></td>'
    '<td><a href="{url}">{name}</a></td>'
    '<td><span class="badge badge-{kind}">{kind_label}</span>'
    '<div class="hint audit-provenance">{provenance}{imported}</div></td>'
    '<td>{source}</td><td class="audit-wrap">{principal}</td><td>{key}{region}</td>'
    "<td>{error}</td></tr>"
)


def rows_html(rows: list[dict]) -> SafeString:
    """The table's rows, every value escaped (``core.html``): a few µs a row, where the
    template's per-row tags cost a hundred times that on the audit log's busiest page."""
    return html_join(
        "\n",
        (
            html_format(
                _ROW,
                **{
                    **row,
                    "error_class": _ERROR_CLASS if row["error"] else _NOTHING,
                    "imported": html_format(
                        _IMPORTED, title=row["imported_from"], file=row["imported_file"]
                    )
                    if row["imported_file"]
                    else _NOTHING,
                    "key": html_format(_KEY, title=row["key_arn"], short=row["key_short"])
                    if row["key_arn"]
                    else _NOTHING,
                    "error": html_format(_ERROR, code=row["error"]) if row["error"] else _NOTHING,
                },
            )
            for row in rows
        ),
    )


# Fragments of a row (html_format escapes what fills them).
_NOTHING = SafeString("")
_ERROR_CLASS = SafeString(' class="audit-error-row"')
_IMPORTED = ': <code class="audit-wrap" title="{title}">{file}</code>'
_KEY = '<code class="audit-key" title="{title}">key/{short}…</code><br>'
_ERROR = '<span class="badge badge-failed">{code}</span>'


def _provenance(event) -> dict:
    """Who wrote the event down: the portal, or the customer's trail (and which file)."""
    imported = origin_of(event.kind) == CUSTOMER_TRAIL
    return {
        "imported": imported,
        "provenance": provenance_label(kind=event.kind),
        "imported_from": event.imported_from if imported else "",
        "imported_file": event.imported_from.rsplit("/", 1)[-1] if imported else "",
    }


def _cursor(request, name):
    token = request.GET.get(name)
    return decode_cursor(token) if token else None


def _export(request, org, form, export_format):
    if export_format not in export.FORMATS:
        return HttpResponseBadRequest(
            f"Unknown export format {export_format[:20]!r}: use format=csv or format=json.",
            content_type="text/plain; charset=utf-8",
        )
    if not form.is_valid():
        problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())
        return HttpResponseBadRequest(
            f"The export's filters are not valid ({problems}).",
            content_type="text/plain; charset=utf-8",
        )
    return export.export_response(
        org=org,
        filters=form.filters(),
        fmt=export_format,
        actor=request.user,
        source_ip=client_ip(request),
        user_agent=user_agent(request),
    )


@org_admin_required
def org_audit_event(request, org, event_id):
    """``/orgs/<id>/audit/events/<eventID>/``: the whole CloudTrail record."""
    event = selectors.get_event(org=org, event_id=event_id)
    return render(
        request,
        "audit/event_detail.html",
        {
            "org": org,
            "event": event,
            "record_json": json.dumps(event.record, indent=2, ensure_ascii=False),
            **_provenance(event),
        },
    )


@require_safe
def public_key_pem(request):
    """The portal's Ed25519 public key (PEM): checks the signed digests in exports."""
    try:
        pem, key_id = digests.public_key_pem(), digests.current_key_id()
    except digests.SigningKeyMissing:
        return HttpResponse(
            "The audit signing key is not configured.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    response = HttpResponse(pem, content_type="application/x-pem-file")
    response["Content-Disposition"] = 'inline; filename="byok-portal-audit-public-key.pem"'
    response["X-Audit-Key-Id"] = key_id
    response["Cache-Control"] = "public, max-age=3600"
    return response


@require_safe
def verifier_source(request):
    """The stand-alone offline verifier (``audit/verify.py``), to run next to an export."""
    source = (Path(__file__).resolve().parent / "verify.py").read_bytes()
    response = HttpResponse(source, content_type="text/x-python; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="byok_audit_verify.py"'
    response["Cache-Control"] = "public, max-age=3600"
    return response
