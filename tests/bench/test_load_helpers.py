"""The pure helpers of ``python -m bench load`` and the Procfile commands it relies on: the
one-time codes it signs staff in with, the forms it reads, and how it turns what each process
answered into the kill switch's latency and the page groups' figures."""

import time

from django_otp.oath import hotp
from django_otp.oath import totp as django_otp_totp

from bench._load_http import hidden_inputs, totp
from bench._load_stats import Sample, failures_between, group_figures, percentile, refusal_latency
from scripts.proc import command_of

KEY = "3132333435363738393031323334353637383930"  # RFC 6238's SHA-1 test secret, in hex


def test_one_time_codes_match_what_the_portal_checks():
    now = time.time()
    expected = str(django_otp_totp(bytes.fromhex(KEY), step=30, t0=0, digits=6)).zfill(6)
    if int(time.time() // 30) == int(now // 30):  # the same 30-second step
        assert totp(KEY, at=now) == expected
    for moment in (59, 1111111109, 1234567890):
        reference = str(hotp(bytes.fromhex(KEY), int(moment // 30), digits=6)).zfill(6)
        assert totp(KEY, at=moment) == reference


def test_rfc_6238_vectors():
    assert totp(KEY, at=59, digits=8) == "94287082"
    assert totp(KEY, at=1111111109, digits=8) == "07081804"


def test_hidden_inputs_of_a_form_page():
    html = (
        '<form><input type="hidden" name="csrfmiddlewaretoken" value="abc123">'
        '<input type="text" name="username" value="x">'
        '<input name="next" type="hidden" value="/orgs/1/"></form>'
    )
    assert hidden_inputs(html) == {"csrfmiddlewaretoken": "abc123", "next": "/orgs/1/"}


def test_each_process_counts_once_it_refuses_after_its_last_successful_read():
    since = 100.0
    observations = [
        (1, 7, 99.0, True),  # before the revoke: ignored
        (1, 7, 100.2, True),
        (1, 7, 100.6, False),
        (2, 7, 100.1, False),  # refused app 7 …
        (2, 8, 100.3, True),  # … still read app 8 (another app's memo was fresh)
        (2, 8, 100.9, False),
    ]
    figures = refusal_latency(observations, pids=[1, 2], since=since)
    assert figures["per_pid"] == {1: 0.6, 2: 0.9}
    assert figures["latency_s"] == 0.9
    assert figures["never_refused"] == []
    assert figures["flickers"] == 0
    assert figures["other_app_reads"] == 1


def test_a_process_that_never_refuses_leaves_the_latency_open():
    figures = refusal_latency([(1, 7, 100.5, False)], pids=[1, 2], since=100.0)
    assert figures["latency_s"] is None
    assert figures["never_refused"] == [2]


def test_reading_an_app_again_after_refusing_it_is_a_flicker():
    observations = [(1, 7, 100.1, False), (1, 7, 100.2, True), (1, 7, 100.3, False)]
    figures = refusal_latency(observations, pids=[1], since=100.0)
    assert figures["flickers"] == 1
    assert figures["per_pid"] == {1: 0.3}


def test_page_group_percentiles_and_the_reload_window():
    samples = [Sample(1000.0 + i, "audit", float(i + 1), True) for i in range(100)]
    samples.append(Sample(1050.5, "admin", 5000.0, False))
    groups, total = group_figures(samples)
    assert groups["audit"]["p50_ms"] == 50.0
    assert groups["audit"]["p95_ms"] == 95.0
    assert groups["admin"]["failures"] == 1
    assert total["requests"] == 101
    steady, _ = group_figures(samples, exclude=(1050.0, 1051.0))
    assert "admin" not in steady
    assert failures_between(samples, 1052.0, 1060.0) == 1  # still in flight at 1052
    assert failures_between(samples, 1056.0, 1060.0) == 0


def test_percentile_is_nearest_rank():
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([], 0.95) is None


def test_the_procfile_runs_the_portal_unless_told_otherwise():
    assert "byokportal.wsgi:application" in command_of("web", env={})
    worker = command_of("worker", env={})
    assert worker[worker.index("-A") + 1] == "byokportal"
    bench = {"WSGI_APP": "bench._load_wsgi:application", "CELERY_APP": "bench._load_tasks"}
    assert "bench._load_wsgi:application" in command_of("web", env=bench)
    worker = command_of("worker", env=bench)
    assert worker[worker.index("-A") + 1] == "bench._load_tasks"
