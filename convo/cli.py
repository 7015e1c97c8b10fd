"""The ``convo`` command line (click)."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click

from convo.config import Settings, load_dotenv_if_present
from convo.devkit.fineract_sim import start_simulator


def _settings(**overrides) -> Settings:
    load_dotenv_if_present()
    return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})


def _checked_settings() -> Settings:
    """Settings of a long-running command: with CONVO_ENV=production, development defaults (empty pepper or
    callback token, a default database password, the simulator as Mifos X) stop it here with the reason."""
    from convo.security import ConfigurationError, check_production_settings

    settings = _settings()
    try:
        check_production_settings(settings)
    except ConfigurationError as e:
        raise click.ClickException(f"not starting: {e}") from None
    return settings


def sim_settings(sim_url: str, **overrides) -> Settings:
    """Settings for a gateway in front of the simulator, with embedded defaults (no Redis needed)."""
    base = _settings()
    values = dict(fineract_url=f"{sim_url}/fineract-provider/api/v1", fineract_user="mifos",
                  fineract_password="password", fineract_tenant="default")
    values.update(overrides)
    return base.replace(**values)


#: blocking threads per granian worker. A hop waiting on a slow Mifos X holds its thread for up to the
#: hop budget, so callers dialling at once need that many threads or they queue (bench/README.md,
#: "Mifos X slow"); threads that wait cost no CPU.
SERVE_THREADS = 64


def require_schema(settings: Settings) -> None:
    """Refuse to start (exit 1, "run `convo db upgrade`") when the database is not at the schema this
    code needs. A database that cannot be reached yet is only a warning: ``/healthz`` reports it."""
    from convo.store.db import SchemaBehind, check_schema, make_engine

    engine = make_engine(settings.database_url)
    try:
        check_schema(engine)
    except SchemaBehind as e:
        raise click.ClickException(f"not starting: {e}") from None
    except Exception as e:  # noqa: BLE001 - not reachable now; the service starts and /healthz says so
        click.echo(f"warning: cannot check the database schema now ({type(e).__name__}); "
                   "/healthz reports the database until it answers", err=True)
    finally:
        engine.dispose()


def start_worker(settings: Settings, *, once: bool = False, stop_event=None, handle_signals: bool = True,
                 **outbox_overrides) -> dict[str, int]:
    """Run the worker: every registered task (:func:`convo.jobs.worker.build_tasks`) with what they need
    built here from ``settings``. ``convo worker [--once]``, ``convo demo`` and ``python -m convo.jobs.worker``
    all start it through this one function. Returns the rows each task handled."""
    from convo.devkit.convtest import reload_tests
    from convo.jobs.worker import JobLoop, build_tasks
    from convo.services import build_services
    from convo.web import create_app

    # the same check of an edited flows folder as the app's, so worker and app switch to the same version
    tasks = build_tasks(build_services(settings, flow_tests=reload_tests(create_app)), **outbox_overrides)
    return JobLoop(tasks).run(once=once, stop_event=stop_event, handle_signals=handle_signals)


class LeaseRefused(click.ClickException):
    """``convo worker`` refused to start: the lease does not cover a send (exit status 2)."""

    exit_code = 2


@click.group()
def main() -> None:
    """mifos-convo: SMS and USSD banking for Mifos X."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, help="gateway port")
@click.option("--sim-port", default=8443, show_default=True, help="Fineract simulator port")
def demo(host: str, port: int, sim_port: int) -> None:
    """Simulated Mifos X + gateway in one process, embedded defaults."""
    import os
    import threading

    from convo.devkit.fake_at import start_fake_at
    from convo.devkit.fineract_seed import DEMO_PHONES
    from convo.store.db import upgrade as db_upgrade
    from convo.web import create_app

    base = f"http://{host}:{port}"
    sim = start_simulator(sim_port, host)
    fake = start_fake_at(f"{base}/gateways/africastalking/delivery", host=host)
    overrides = {} if "CONVO_REDIS_URL" in os.environ else {"redis_url": "memory://demo"}
    if "CONVO_AT_USERNAME" not in os.environ:
        overrides.update(at_username="sandbox", at_api_key="demo", at_base_url=fake.url)
    settings = sim_settings(sim.url, **overrides)
    db_upgrade(settings.database_url)
    app = create_app(settings)
    threading.Thread(target=start_worker, args=(settings,), kwargs={"handle_signals": False, "poll_seconds": 0.5},
                     daemon=True, name="worker").start()
    click.echo(f"Fineract simulator: {sim.url}/fineract-provider/api/v1 (mifos / password)")
    click.echo(f"Gateway:            {base}  (Africa's Talking USSD callback: {base}/gateways/africastalking/ussd)")
    click.echo(f"SMS:                {base}/gateways/africastalking/sms -> outbox ({settings.database_url}) "
               f"-> worker -> fake Africa's Talking {fake.url} (sent: {fake.url}/__fake/messages)\n")
    click.echo(f"Staff console:      {base}/console/  (sign in as Mifos X user mifos / password; "
               f"a client's page: {base}/console/clients/1)\n")
    click.echo("Demo phones:")
    for phone, what in DEMO_PHONES:
        click.echo(f"  {phone}  {what}  console: {base}/console/?q={phone.replace('+', '%2B')}")
    first = DEMO_PHONES[0][0]
    click.echo("\nDial from a terminal phone (another shell):")
    click.echo(f"  .venv/bin/convo simulate --phone {first} --url {base}")
    click.echo("or as Africa's Talking would (a new session id each time you dial):")
    click.echo(f"  curl -s {base}/gateways/africastalking/ussd -d sessionId=$(date +%s) -d serviceCode='*384*12#' "
               f"-d phoneNumber={first} -d networkCode=63902 -d text=")
    click.echo("Text BAL to the short code as Africa's Talking would, then see the reply the worker sent:")
    click.echo(f"  curl -s {base}/gateways/africastalking/sms -d from={first} -d to=22384 -d text=BAL "
               f"-d id=$(date +%s) -d date=2026-01-01 -d networkCode=63902 && sleep 2 "
               f"&& curl -s {fake.url}/__fake/messages")
    click.echo("")
    from werkzeug.serving import run_simple

    run_simple(host, port, app, threaded=True, use_reloader=False)


@main.command()
@click.option("--once", is_flag=True, help="do what is due now (every task), then exit")
@click.option("--metrics-port", default=0, show_default=True, envvar="CONVO_WORKER_METRICS_PORT",
              help="serve this worker's Prometheus metrics (sends, repayments, reminder runs) on this port (0: off)")
@click.option("--batch", type=int, default=None, help="outbox rows claimed at once (CONVO_WORKER_BATCH)")
@click.option("--lease-seconds", type=float, default=None, help="CONVO_WORKER_LEASE_SECONDS")
@click.option("--database-url", default=None, help="CONVO_DATABASE_URL")
def worker(once: bool, metrics_port: int, batch: int | None, lease_seconds: float | None,
           database_url: str | None) -> None:
    """Send queued SMS, make repayments from savings, retry pending Fineract hooks, run reminders on
    CONVO_REMIND_CRON (with --once: when it matches the current minute).

    Run as many as you like against PostgreSQL (one with SQLite).

    Refuses to start unless CONVO_WORKER_LEASE_SECONDS >= 2 x the gateway's
    send timeout + 5 s (Africa's Talking: 2 x (3.05 + CONVO_AT_TIMEOUT) + 5,
    31.1 s with the default CONVO_AT_TIMEOUT=10)."""
    from convo.jobs.worker import LeaseTooShort, check_lease

    settings = _checked_settings()
    given = dict(worker_batch=batch, worker_lease_seconds=lease_seconds, database_url=database_url)
    settings = settings.replace(**{k: v for k, v in given.items() if v is not None})
    try:
        check_lease(settings)
    except LeaseTooShort as exc:
        raise LeaseRefused(str(exc)) from None
    require_schema(settings)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from convo import logs

    logs.install()                               # phone numbers masked at INFO and above, as in the app
    if metrics_port and not once:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)          # GET :<port>/metrics (convo/metrics.py, "the worker")
    start_worker(settings, once=once)


@main.command()
@click.option("--date", "on", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="treat this day as today in every office (default: today in each office's time zone)")
@click.option("--dry-run", is_flag=True, help="list the reminders, write nothing")
@click.option("--no-meetings", is_flag=True, help="payment reminders only")
def remind(on, dry_run: bool, no_meetings: bool) -> None:
    """Enqueue payment and meeting reminders (each goes once, however often this runs)."""
    from convo.notify.reminders import run
    from convo.services import build_services

    settings = _settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rep = run(build_services(settings), on=on.date() if on else None, dry_run=dry_run, meetings=not no_meetings)
    texts = {o.reminder.key: o for o in rep.texts}
    for r in rep.reminders:
        click.echo(f"{r.rule:10} client {r.client_id:<6} {r.key}")
        if dry_run and r.key in texts:                  # what the client would read, in their language
            click.echo(f"           ({texts[r.key].lang}) {texts[r.key].text}")
    for why in rep.skipped:
        click.echo(f"skipped: {why}", err=True)
    if dry_run:
        click.echo(f"{len(rep.reminders)} reminder(s) due; dry run, nothing written")
    else:
        click.echo(f"{len(rep.reminders)} reminder(s) due: {rep.written} written, {rep.duplicates} already sent, "
                   f"{rep.suppressed} opted out; {rep.alerts} staff alert(s)")


@main.group()
def db() -> None:
    """The outbox database."""


@db.command()
def upgrade() -> None:
    """Apply database migrations (Alembic) to CONVO_DATABASE_URL."""
    from convo.store.db import upgrade as do_upgrade

    settings = _settings()
    do_upgrade(settings.database_url)
    click.echo(f"database at {settings.database_url.split('@')[-1]} is up to date")


@main.group()
def report() -> None:
    """Reports from the outbox database."""


@report.command()
@click.option("--month", default=None, metavar="YYYY-MM", help="calendar month (UTC); default: this month")
def costs(month: str | None) -> None:
    """Messages, segments and cost per gateway and destination country for a month."""
    from convo.notify.costs import cost_rows, format_costs, month_bounds
    from convo.store.db import make_engine

    try:
        start, _ = month_bounds(month)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--month") from None
    settings = _settings()
    require_schema(settings)
    engine = make_engine(settings.database_url)
    try:
        click.echo(format_costs(cost_rows(engine, start.strftime("%Y-%m")), start.strftime("%Y-%m")), nl=False)
    finally:
        engine.dispose()


@main.command("fake-at")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8089, show_default=True)
@click.option("--delivery-url", default=None, help="where to POST delivery reports")
def fake_at(host: str, port: int, delivery_url: str | None) -> None:
    """A local fake of Africa's Talking's SMS API (set CONVO_AT_BASE_URL to it)."""
    from convo.devkit.fake_at import main as fake_main

    fake_main(host=host, port=port, delivery_url=delivery_url)


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--workers", default=2, show_default=True, envvar="GRANIAN_WORKERS", help="processes (granian)")
@click.option("--threads", default=SERVE_THREADS, show_default=True, envvar="GRANIAN_BLOCKING_THREADS",
              help="threads per process running requests; most of them wait on Mifos X (bench/README.md)")
@click.option("--migrate", is_flag=True, envvar="CONVO_MIGRATE_ON_START",
              help="apply database migrations first (safe when several start at once)")
def serve(host: str, port: int, workers: int, threads: int, migrate: bool) -> None:
    """Serve the gateway (granian, the WSGI server chosen by benchmark).

    Refuses to start when the database schema is behind the code (run `convo db upgrade`, or
    pass --migrate).

    Metrics of all workers: PROMETHEUS_MULTIPROC_DIR (default: a fresh temporary directory) is emptied
    here, before the workers start, since granian has no hook when a worker exits; /metrics sums them."""
    import os
    import tempfile

    from granian import Granian
    from granian.constants import Interfaces

    settings = _checked_settings()
    if migrate:
        from convo.store.db import upgrade as do_upgrade

        do_upgrade(settings.database_url)
    require_schema(settings)
    # the workers' prometheus_client reads this when first imported (nothing here has imported it yet)
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    multiproc = given or tempfile.mkdtemp(prefix="convo-metrics-")
    os.makedirs(multiproc, exist_ok=True)
    for name in os.listdir(multiproc):           # a previous run's files (granian tells no one a worker exited)
        if name.endswith(".db"):
            os.remove(os.path.join(multiproc, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc
    try:
        Granian("convo.web:create_app", factory=True, interface=Interfaces.WSGI, address=host, port=port,
                workers=workers, blocking_threads=threads).serve()
    finally:
        if given is None:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


@main.command("fineract-sim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True)
def fineract_sim(host: str, port: int) -> None:
    """Run the Fineract simulator alone."""
    from convo.devkit.fineract_sim import main as sim_main

    sim_main(host=host, port=port)


@main.command()
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="one JSON document: errors and warnings with file, line, "
                                                      "state, key, language (for editors and CI)")
@click.option("--warnings-as-errors", is_flag=True, help="fail on warnings too (texts cut on a USSD screen, ...)")
def lint(path: Path | None, as_json: bool, warnings_as_errors: bool) -> None:
    """Validate flows, texts and notifications (default: the configured flows directory).

    Exit status 0 when the running service would accept these files, 1 when not."""
    import json

    from convo.services import lint_folder

    path = path or Path(_settings().flows_dir)
    res = lint_folder(path)
    failed = bool(res.errors) or (warnings_as_errors and bool(res.warnings))
    if as_json:
        fs = res.flowset
        click.echo(json.dumps({"ok": not failed, "version": fs.version if fs else None,
                               "flows": len(fs.flows) if fs else 0, "languages": list(fs.languages) if fs else [],
                               "errors": [e.as_dict() for e in res.errors],
                               "warnings": [w.as_dict() for w in res.warnings]}, indent=1))
        sys.exit(1 if failed else 0)
    if not failed:
        fs = res.flowset
        click.echo(f"OK: {len(fs.flows)} flows, languages {', '.join(fs.languages)}, version {fs.version}"
                   + (f", {len(res.warnings)} warning(s)" if res.warnings else ""))
    for err in res.errors:
        click.echo(str(err), err=True)
    for w in res.warnings:
        click.echo(f"warning: {w}", err=True)
    if failed:
        what = f"{len(res.errors)} problem(s)" + (f", {len(res.warnings)} warning(s)" if res.warnings else "")
        refused = "the running service would refuse these files" if res.errors else "--warnings-as-errors"
        click.echo(f"{what}; {refused}.", err=True)
        sys.exit(1)


@main.command()
@click.argument("flow")
@click.option("--path", type=click.Path(exists=True, path_type=Path), default=None)
def graph(flow: str, path: Path | None) -> None:
    """Print a flow as a Mermaid state diagram (from its compiled machine)."""
    from convo.flowlang.compiler import load_flowset
    from convo.flowlang.graph import mermaid

    fs = load_flowset(path or Path(_settings().flows_dir))
    if flow not in fs.flows:
        raise click.BadParameter(f"no flow {flow!r} (have: {', '.join(fs.flows)})")
    click.echo(mermaid(fs.flows[flow]))


@main.command("test")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--flows", "flows_dir", type=click.Path(exists=True, path_type=Path), default=None)
def test_cmd(path: Path | None, flows_dir: Path | None) -> None:
    """Run conversation tests (flows/tests/*.yaml) against the simulator."""
    import tempfile

    from convo.devkit.convtest import flask_poster, load_tests, prepare_app, run_test
    from convo.web import create_app

    flows_dir = flows_dir or Path(_settings().flows_dir)
    path = path or flows_dir / "tests"
    logging.disable(logging.WARNING)                    # the results only, not the app's own log lines
    sim = start_simulator()
    tmp = tempfile.TemporaryDirectory(prefix="convo-test-")
    try:
        app = create_app(sim_settings(sim.url, redis_url="memory://", flows_dir=str(flows_dir),
                                      database_url=f"sqlite:///{tmp.name}/conversations.db"))
        setup = prepare_app(app)
        post = flask_poster(app.test_client())
        failed = 0
        tests = load_tests(path)
        for file, t in tests:
            r = run_test(post, file, t, setup=setup)
            if r.failure:
                failed += 1
                click.echo(f"FAIL {Path(file).name}: {r.failure}")
            else:
                click.echo(f"ok   {Path(file).name}: {r.name}")
        click.echo(f"{len(tests) - failed} passed, {failed} failed")
    finally:
        sim.stop()
        tmp.cleanup()
        logging.disable(logging.NOTSET)
    sys.exit(1 if failed or not tests else 0)


def phone_screen(text: str, width: int = 30) -> str:
    """A USSD screen as a feature phone shows it: ``text`` wrapped to ``width`` inside a frame."""
    import textwrap

    rows = [part for line in text.split("\n")
            for part in (textwrap.wrap(line, width, break_long_words=True) or [""])]
    edge = "+" + "-" * width + "+"
    return "\n".join([edge, *(f"|{r:<{width}}|" for r in rows), edge])


@main.command()
@click.option("--phone", required=True, help="caller's number, e.g. +254700000101")
@click.option("--url", default=None, help="a running gateway (default: in-process with the simulator)")
@click.option("--code", default="*384*12#", show_default=True, help="USSD code to dial")
def simulate(phone: str, url: str | None, code: str) -> None:
    """A terminal phone: dial the USSD menu and answer it."""
    from convo.devkit.convtest import UssdPhone, flask_poster

    sim = None
    post: Callable[[str, dict], tuple[int, str]]
    if url:
        import requests

        def post_to_url(path: str, form: dict) -> tuple[int, str]:
            r = requests.post(url.rstrip("/") + path, data=form, timeout=10)
            return r.status_code, r.text

        post = post_to_url
    else:
        from convo.web import create_app

        logging.disable(logging.WARNING)
        sim = start_simulator()
        import tempfile

        from convo.devkit.convtest import prepare_app

        tmp = tempfile.mkdtemp(prefix="convo-simulate-")   # a fresh database: the phone has no PIN yet
        app = create_app(sim_settings(sim.url, redis_url="memory://", database_url=f"sqlite:///{tmp}/simulate.db"))
        prepare_app(app)
        post = flask_poster(app.test_client())
    ph = UssdPhone(post, phone, "/gateways/africastalking/ussd")
    try:
        while True:
            click.echo(f"\n[dialing {code} from {phone}]")
            status, body = ph.dial(code)
            while True:
                if status != 200:
                    click.echo(f"!! HTTP {status}: {body}")
                    break
                kind, _, text = body.partition(" ")
                click.echo(phone_screen(text))
                if kind == "END":
                    break
                answer = click.prompt(">", default="", show_default=False)
                status, body = ph.send(answer)
            if not click.confirm("Dial again?", default=True):
                break
    except (click.Abort, EOFError):
        click.echo("")
    finally:
        if sim:
            sim.stop()
            logging.disable(logging.NOTSET)      # quiet only while the in-process phone runs


if __name__ == "__main__":
    main()
