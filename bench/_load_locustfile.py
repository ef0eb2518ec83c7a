"""The people ``bench load`` sends at the portal (``locust -f bench/_load_locustfile.py``).

Configured by the JSON file named in ``BENCH_LOAD_CONFIG`` (written by bench/load.py): signed-in
sessions per role, the organizations and their apps, the organization the run revokes, the
bench token of the data-plane read route. Each simulated person opens one page every
``PACING_S`` seconds on average (``constant_pacing``), as one of:

* **org admins** (dashboard, org overview, BYOK page, audit log with a filter of the day, a
  filtered CSV export);
* **account reps** (the request queue, request pages);
* **support staff** (Django admin changelists);
* **apps** reading records through the data plane in the web process (``/__bench__/read/``).

Request names are the page groups the bench reports. A page answers 200 without a redirect or
it is a failure; a refused app read is a failure unless it is the revoked organization's.

``BENCH_LOAD_MODE=calibrate``: :class:`StepUp` changes the number of people step by step to
find the most it serves with every group's p95 on target, and writes the steps and the count
chosen to ``BENCH_LOAD_CALIBRATION`` (JSON). ``BENCH_LOAD_SAMPLES``: every request as one
line ``start,group,ms,ok`` (the bench's percentiles and time windows come from these).
"""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta

from locust import FastHttpUser, LoadTestShape, constant_pacing, events, task

CONFIG = json.loads(open(os.environ["BENCH_LOAD_CONFIG"]).read())  # noqa: SIM115, PTH123
PACING_S = float(CONFIG.get("pacing_s", 2.0))
BYOK_ORGS = CONFIG["byok_orgs"]
REVOKED_APPS = {int(a) for a in CONFIG["revoked_apps"]}
READ_TARGETS = [(int(app), records) for org in BYOK_ORGS for app, records in org["apps"].items()]
_SAMPLES = (
    open(os.environ["BENCH_LOAD_SAMPLES"], "a", buffering=1 << 16)  # noqa: SIM115, PTH123
    if os.environ.get("BENCH_LOAD_SAMPLES")
    else None
)


@events.request.add_listener
def _sample(name, response_time, exception, start_time=None, **_kwargs):
    """One line per request (``start,group,ms,ok``): exact percentiles, time windows."""
    if _SAMPLES is not None and start_time is not None:
        _SAMPLES.write(f"{start_time:.3f},{name},{response_time:.1f},{0 if exception else 1}\n")


@events.quitting.add_listener
def _flush(**_kwargs):
    if _SAMPLES is not None:
        _SAMPLES.flush()


class _Person(FastHttpUser):
    abstract = True
    role = ""
    wait_time = constant_pacing(PACING_S)

    def on_start(self):
        people = CONFIG["sessions"][self.role]
        self.person = people[random.randrange(len(people))]
        self.cookie = "; ".join(f"{k}={v}" for k, v in self.person["cookies"].items())

    def page(self, path: str, group: str) -> None:
        with self.client.get(
            path,
            name=group,
            headers={"Cookie": self.cookie},
            allow_redirects=False,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code} at {path}")


class OrgAdmin(_Person):
    role = "admin"
    weight = 6

    def on_start(self):
        super().on_start()
        self.org = self.person["org"]

    @task(3)
    def dashboard(self):
        self.page("/", "dashboard")

    @task(1)
    def overview(self):
        self.page(f"/orgs/{self.org}/", "dashboard")

    @task(3)
    def byok(self):
        self.page(f"/orgs/{self.org}/byok/", "byok")

    @task(4)
    def audit(self):
        self.page(f"/orgs/{self.org}/audit/?{_audit_filter()}", "audit")

    @task(1)
    def export(self):
        day = (datetime.now(UTC) - timedelta(days=random.randrange(1, 20))).date()
        query = f"from={day}T00:00&to={day}T23:59&format=csv"
        self.page(f"/orgs/{self.org}/audit/?{query}", "audit_csv")


def _audit_filter() -> str:
    choice = random.randrange(6)
    if choice == 0:
        return ""
    if choice == 1:
        return f"event_name={random.choice(CONFIG['event_names'])}"
    if choice == 2:
        return "errors_only=on"
    if choice == 3:
        return f"region={random.choice(CONFIG['regions'])}"
    if choice == 4:
        return "event_source=kms.amazonaws.com"
    day = (datetime.now(UTC) - timedelta(days=random.randrange(0, 25))).date()
    return f"from={day}T00:00&to={day}T23:59"


class Rep(_Person):
    role = "rep"
    weight = 2

    @task(1)
    def queue(self):
        self.page("/staff/requests/", "staff_queue")

    @task(1)
    def request(self):
        self.page(f"/staff/requests/{random.choice(CONFIG['requests'])}/", "staff_request")


ADMIN_PAGES = [
    "/admin/",
    "/admin/audit/auditevent/",
    "/admin/orgs/organization/",
    "/admin/orgs/appinstance/",
    "/admin/orgs/user/",
    "/admin/connections/byokconnection/",
    "/admin/setup/setuprequest/",
]


class Support(_Person):
    role = "support"
    weight = 2

    @task
    def changelist(self):
        self.page(random.choice(ADMIN_PAGES), "admin")


class App(FastHttpUser):
    """A vendor app reading its records in the web process."""

    weight = 2
    wait_time = constant_pacing(PACING_S)

    @task
    def read(self):
        app, records = random.choice(READ_TARGETS)
        path = f"/__bench__/read/{app}/{random.choice(records)}"
        with self.client.get(
            path,
            name="app_read",
            headers={"X-Bench-Token": CONFIG["bench_token"]},
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code} at {path}")
            elif not response.json().get("readable") and app not in REVOKED_APPS:
                response.failure(f"app {app} refused: {response.json().get('cause')}")


if os.environ.get("BENCH_LOAD_MODE") == "calibrate":

    class StepUp(LoadTestShape):
        """Finds the most people the portal serves with every group's p95 on target: a warm-up
        (not measured), then steps of ``step_s`` seconds, growing ×``growth`` while on target,
        then halving the gap between the last good and the first bad count."""

        use_common_options = True

        def __init__(self):
            super().__init__()
            cal = CONFIG["calibration"]
            self.cal = cal
            self.users = cal["start_users"]
            self.step_started = None  # after the warm-up
            self.good, self.bad = None, None
            self.steps = []
            self.finished = False

        def _worst_p95(self) -> tuple[float, int, float]:
            """The step's slowest p95: of the groups with enough requests to have one, and of
            all requests together (a step too short for any group still counts)."""
            stats = self.runner.stats
            total = stats.total
            entries = [e for e in [*stats.entries.values(), total] if e.num_requests >= 8]
            worst = max((e.get_response_time_percentile(0.95) for e in entries), default=0.0)
            return worst, total.num_failures, total.num_requests / self.cal["step_s"]

        def _next_users(self) -> int | None:
            """Grow while on target; then halve the gap; never fewer than one person of each
            kind (``min_users``)."""
            if self.bad is None:
                grown = max(self.users + 2, round(self.users * self.cal["growth"]))
                return grown if grown <= self.cal["max_users"] else None
            low = self.good["users"] if self.good else self.cal["min_users"]
            if self.bad <= self.cal["min_users"] or self.bad - low <= max(2, low * 0.15):
                return None
            return max(self.cal["min_users"], (low + self.bad) // 2)

        def tick(self):
            if self.finished:
                return None
            now = self.get_run_time()
            if self.step_started is None:
                if now >= self.cal["warmup_s"]:
                    self.step_started = now
                    self.runner.stats.reset_all()
                return (self.users, self.users)
            if now - self.step_started < self.cal["step_s"]:
                return (self.users, self.users)
            worst, failures, rate = self._worst_p95()
            step = {"users": self.users, "p95_ms_worst": worst, "rps": round(rate, 1)}
            self.steps.append(step)
            if worst <= self.cal["target_p95_ms"] and not failures:
                self.good = step
            else:
                self.bad = self.users
            users = self._next_users()
            if users is None or now + self.cal["step_s"] > self.cal["max_s"]:
                return self._finish()
            self.users = users
            self.step_started = now
            self.runner.stats.reset_all()
            return (self.users, self.users)

        def _finish(self):
            """The last good count; none on target: the fewest people tried (flagged)."""
            self.finished = True
            chosen = self.good or min(self.steps, key=lambda step: step["users"], default=None)
            with open(os.environ["BENCH_LOAD_CALIBRATION"], "w") as handle:  # noqa: PTH123
                json.dump(
                    {"chosen": chosen, "target_met": self.good is not None, "steps": self.steps},
                    handle,
                )
            return None
