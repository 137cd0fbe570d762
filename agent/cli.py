"""The command line: parse, load settings, hand over, print, exit with the documented code.

Thin on purpose: each command is a few lines that call into the agent. Heavy imports
(msgraph, azure-identity, apscheduler) happen inside the commands that need them, so
`dap-agent --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.errors import EXIT_INTERNAL, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, DapError, UsageError

if TYPE_CHECKING:
    from agent.run import RunReport
    from agent.settings import Settings

LIST_LIMIT = 25  # entries of a summary list printed by `run` (all are in --json)


def build_parser() -> argparse.ArgumentParser:
    from jobs import REGISTRY  # the job table: a new job needs no change here

    parser = argparse.ArgumentParser(
        prog="dap-agent",
        description="Enforces the DAP contract on a Microsoft 365 / Intune tenant via Graph.",
        epilog="Exit codes: 0 run completed; 1 audit log not intact or internal error; "
               "2 usage or configuration error; 3 cannot reach or authenticate to Graph, or a "
               "permission is missing; 4 the run completed but some actions failed.")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML file (default: $DAP_AGENT_CONFIG, then "
                             "/etc/dap-agent/agent.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"dap-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("jobs", help="list jobs, their schedule and last run")

    run = sub.add_parser("run", help="run one job now")
    run.add_argument("job", choices=list(REGISTRY), help="the job to run: %(choices)s")
    run.add_argument("--dry-run", action="store_true",
                     help="report every change the job would make; make none")
    run.add_argument("--json", action="store_true", help="print the run report as JSON")
    run.add_argument("--final", action="store_true",
                     help="active-users only: deliver the month (its export becomes "
                          "immutable)")
    run.add_argument("--wait", action="store_true",
                     help="if the job is running elsewhere, wait for it instead of exiting")

    export = sub.add_parser("export", help="re-render a stored export")
    export.add_argument("what", choices=["active-users"], help="the export: %(choices)s")
    export.add_argument("--month", required=True, metavar="YYYY-MM",
                        help="the month to re-render from its stored snapshot")
    export.add_argument("--format", choices=["csv", "xlsx"], default="csv",
                        help="file format (default csv)")
    export.add_argument("--output", metavar="PATH",
                        help="where to write it (a file, or an existing directory; default "
                             "<state>/exports/)")

    report = sub.add_parser("report", help="write the monthly service report")
    report.add_argument("--month", required=True, metavar="YYYY-MM",
                        help="the month the report covers")
    report.add_argument("--format", choices=["html", "pdf"], default="html",
                        help="pdf needs the optional extra: pip install 'dap-agent[pdf]'")
    report.add_argument("--output", metavar="PATH",
                        help="write here instead of <state>/reports/")
    report.add_argument("--language", choices=["nl", "en"],
                        help="default: [service_report] language (nl)")

    sub.add_parser("serve", help="the daemon: run jobs on their schedule")

    audit = sub.add_parser("audit", help="check or read the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_sub.add_parser("init", help="start sealing the log; prints the verification key "
                                      "once (keep it off this host)")
    verify = audit_sub.add_parser("verify", help="exit 0 if the log is intact, 1 if not")
    keys = verify.add_mutually_exclusive_group()
    keys.add_argument("--key", metavar="KEY", help="the verification key: check every seal")
    keys.add_argument("--key-file", metavar="FILE", help="read the verification key from FILE")
    verify.add_argument("--checkpoint", action="append", default=[], metavar="SEQ:HASH",
                        help="fail unless the log still holds this entry unchanged "
                             "(repeatable; run reports, mails and notifications carry one)")
    rotate = audit_sub.add_parser("rotate", help="move a broken log aside, start a new chain")
    rotate.add_argument("--reason", required=True, metavar="TEXT",
                        help="why (recorded in the new chain's first entry)")
    show = audit_sub.add_parser("show", help="a run's entries, or the latest runs")
    show.add_argument("run_id", nargs="?", help="the run to show (default: list the latest runs)")
    show.add_argument("--report", action="store_true",
                      help="print the run's stored report (runs/<id>.json.gz) instead of its "
                           "audit entries")

    config = sub.add_parser("config", help="check the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate settings")
    check.add_argument("--online", action="store_true",
                       help="also get a token and check the granted Graph permissions")

    veto = sub.add_parser("veto", help="stop the purge of a leaver (or --lift / --list)")
    veto.add_argument("user", nargs="?", metavar="USER", help="UPN or object id")
    veto.add_argument("--reason", metavar="TEXT", help="why (recorded for both parties)")
    veto.add_argument("--by", metavar="NAME", help="who decides (default: your login name)")
    veto.add_argument("--until", metavar="YYYY-MM-DD", help="the veto ends on that day")
    veto.add_argument("--lift", action="store_true", help="end the veto of USER now")
    veto.add_argument("--list", action="store_true", help="the vetoes that stand")
    veto.add_argument("--json", action="store_true", help="--list as JSON")
    approve = sub.add_parser("approve", help="the customer's approval of a purge "
                             "(purge_requires_approval)")
    approve.add_argument("user", metavar="USER", help="UPN or object id")
    approve.add_argument("--by", required=True, metavar="NAME",
                         help="who approves, on the customer's side")
    approve.add_argument("--reason", metavar="TEXT", help="optional note")

    rules = sub.add_parser("rules", help="the rule catalogue: each finding rule, its "
                           "severity, meaning and what to do")
    rules.add_argument("--json", action="store_true", help="print the catalogue as JSON")

    demo = sub.add_parser("demo", help="all jobs against the built-in sandbox tenant")
    demo.add_argument("--dir", default="dap-agent-demo",
                      help="where the demo keeps its config, tenant and state "
                           "(default ./dap-agent-demo)")
    demo.add_argument("--users", type=_count, metavar="N",
                      help="generate a tenant of N users instead of the small demo tenant "
                           "(with --devices: a large tenant for trying the agent at scale)")
    demo.add_argument("--devices", type=_count, metavar="N",
                      help="generated tenant: N devices in Intune and Entra ID, 60%% with a "
                           "BitLocker key")
    _global_options_after_the_command(parser)
    return parser


def _count(text: str) -> int:
    if not text.isdigit() or int(text) > 1_000_000:
        raise argparse.ArgumentTypeError(f"not a count from 0 to 1000000: {text!r}")
    return int(text)


def _global_options_after_the_command(parser: argparse.ArgumentParser) -> None:
    """`dap-agent run X --config F` works like `dap-agent --config F run X`: every
    subcommand also takes --config, -v and --debug. SUPPRESS as default, so an option given
    before the command is not reset by the subparser. (argparse lists subparsers only
    through its private _SubParsersAction.)"""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for subparser in action.choices.values():
            options = {o for a in subparser._actions for o in a.option_strings}
            if "--config" not in options:
                subparser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                                       help="TOML file (as before the command)")
            if "--verbose" not in options:
                subparser.add_argument("-v", "--verbose", action="store_true",
                                       default=argparse.SUPPRESS, help="debug logging")
            if "--debug" not in options:
                subparser.add_argument("--debug", action="store_true",
                                       default=argparse.SUPPRESS,
                                       help="show tracebacks of errors")
            _global_options_after_the_command(subparser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from agent.logs import configure, redact_text

    # the demo prints its own summary; its per-change log lines would drown it on a terminal
    quiet = args.command == "demo" and not args.verbose
    configure(verbose=args.verbose, quiet=quiet)
    try:
        return COMMANDS[args.command](args)
    except DapError as exc:
        print(f"dap-agent: error: {redact_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("dap-agent: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `dap-agent audit show | head`: the reader has gone; end quietly. Point stdout at
        # devnull so the interpreter's final flush does not fail again (Python docs, signal:
        # "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except PermissionError as exc:  # most likely the service user's state, read by another
        if args.debug:
            raise
        from agent.statedir import access_error

        message = str(access_error(exc.filename or "?", setting="file"))
        print(f"dap-agent: error: {redact_text(message)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if args.debug:
            raise
        print(f"dap-agent: internal error: {type(exc).__name__}: {redact_text(str(exc))} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def _settings(args: argparse.Namespace) -> Settings:
    from agent.logs import remember_secret
    from agent.settings import config_path, load_settings

    settings = load_settings(config_path(args.config))
    if settings.client_secret is not None:
        remember_secret(settings.client_secret.get_secret_value())
    return settings


# ---- commands ------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from agent.progress import terminal_progress
    from agent.runner import run_job

    if args.final and args.job != "active-users":
        raise UsageError(f"--final delivers the active-users month; job {args.job} has no "
                         "month to deliver")
    settings = _settings(args)
    try:
        report = asyncio.run(run_job(settings, args.job, dry_run=args.dry_run, final=args.final,
                                     wait_for_lock=args.wait, progress=terminal_progress()))
    except DapError as exc:
        failed: RunReport | None = getattr(exc, "report", None)
        if failed is not None and args.json:
            _print_json(failed)
        raise
    if args.json:
        _print_json(report)
    else:
        print_report(report)
    return EXIT_PARTIAL if report.status == "partial" else EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    from agent.jobstate import job_status
    from agent.statedir import check_readable

    settings = _settings(args)
    check_readable(settings.state_dir)
    _warn_if_audit_broken(settings)
    rows = job_status(settings)
    print(f"{'JOB':<18} {'SCHEDULE':<24} {'NEXT RUN':<26} {'LAST RUN':<22} {'STATUS':<8} FINDINGS")
    for row in rows:
        print(f"{row.job:<18} {row.schedule:<24} {row.next_run or '-':<26} "
              f"{row.last_run or '-':<22} {row.status or '-':<8} "
              f"{'-' if row.findings is None else row.findings}")
    from agent.credentials import certificate_summary

    if (certificate := certificate_summary(settings)) is not None:
        print(certificate)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from agent.statedir import check_readable
    from jobs.active_users import export_month

    settings = _settings(args)
    check_readable(settings.state_dir)
    _warn_if_audit_broken(settings)
    output = Path(args.output) if args.output else None
    if output is not None and not output.is_dir() and not output.parent.is_dir():
        # a typo in the path must not leave a new directory tree behind
        raise UsageError(f"--output {output}: the directory {output.parent} does not exist; "
                         "create it first or choose another path")
    path = export_month(settings.state_dir, args.month, args.format, output)
    print(path)
    return EXIT_OK


def _warn_if_audit_broken(settings: Settings) -> None:
    from agent.audit.cli import warn_if_broken
    from agent.runner import audit_log

    warn_if_broken(audit_log(settings))


def cmd_report(args: argparse.Namespace) -> int:
    from agent.report import write_report
    from agent.runner import ensure_state_dir

    settings = _settings(args)
    ensure_state_dir(settings)
    written = write_report(settings.state_dir, args.month, tz=settings.zone,
                           language=args.language or settings.policy("service_report").language,
                           fmt=args.format, output=Path(args.output) if args.output else None)
    print(written.path)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from agent.serve import serve

    settings = _settings(args)
    asyncio.run(serve(settings))
    return EXIT_OK


def cmd_veto(args: argparse.Namespace) -> int:
    from agent import decide

    settings = _settings(args)
    if args.list:
        if args.user or args.lift or args.until:
            raise UsageError("veto --list takes no USER, --lift or --until")
        print(decide.listing(settings, as_json=args.json))
        return EXIT_OK
    if not args.user:
        raise UsageError("veto: USER is required (a UPN or object id), or --list")
    if args.lift and args.until:
        raise UsageError("veto --lift takes no --until")
    decision = decide.record(settings, "lift" if args.lift else "veto", args.user,
                             by=args.by, reason=args.reason, until=args.until)
    print(decide.describe(decision))
    return EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    from agent import decide

    decision = decide.record(_settings(args), "approve", args.user, by=args.by,
                             reason=args.reason)
    print(decide.describe(decision))
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from agent.audit import cli as audit_cli
    from agent.runner import audit_log
    from agent.statedir import check_readable

    settings = _settings(args)
    check_readable(settings.state_dir)
    log = audit_log(settings)
    if args.audit_command == "verify":
        return audit_cli.verify(log, key=args.key, key_file=args.key_file,
                                checkpoints=args.checkpoint)
    if args.audit_command == "init":
        return audit_cli.init(log)
    if args.audit_command == "rotate":
        return audit_cli.rotate(log, args.reason)
    audit_cli.warn_if_broken(log)
    if args.report:
        return _show_report(settings, args.run_id)
    if args.run_id:
        entries = [e for e in log.entries() if e.get("run_id") == args.run_id]
        if not entries:
            raise UsageError(f"no run {args.run_id!r} in {log.path}")
        for entry in entries:
            print(json.dumps(entry, ensure_ascii=False))
        return EXIT_OK
    runs: dict[str, dict[str, Any]] = {}
    for entry in log.entries():
        if entry.get("event") == "run-started":
            runs[entry["run_id"]] = {"started": entry.get("ts"), "job": entry.get("job"),
                                     "trigger": entry.get("trigger"),
                                     "dry_run": entry.get("dry_run"), "status": "running?"}
        elif entry.get("event") in ("run-finished", "run-failed") and entry["run_id"] in runs:
            runs[entry["run_id"]]["status"] = entry.get("status")
    print(f"{'RUN ID':<48} {'JOB':<18} {'TRIGGER':<9} {'DRY':<5} STATUS")
    for run_id, info in list(runs.items())[-20:]:
        print(f"{run_id:<48} {human(info['job']):<18} {human(info['trigger']):<9} "
              f"{'yes' if info['dry_run'] else 'no':<5} {human(info['status'])}")
    return EXIT_OK


def _show_report(settings: Settings, run_id: str | None) -> int:
    from agent.run import read_report_bytes

    if not run_id or "/" in run_id or run_id.startswith("."):
        raise UsageError("audit show --report needs a RUN_ID (as `audit show` lists them)")
    runs = settings.state_dir / "runs"
    try:
        sys.stdout.buffer.write(read_report_bytes(run_id, runs))
    except FileNotFoundError:
        raise UsageError(f"no stored report of run {run_id!r} in {runs} (pruned by "
                         "[retention], or not a run id)") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from jobs import REGISTRY

    enabled = [spec for spec in REGISTRY.values()
               if settings.policy(spec.policy_section).enabled]
    from agent.credentials import certificate_summary, check_credentials
    from agent.statedir import check_writable

    warnings = check_credentials(settings)
    check_writable(settings.state_dir)
    print(f"configuration valid: tenant {settings.tenant_id}, graph {settings.graph_url}, "
          f"state {settings.state_dir}")
    if (certificate := certificate_summary(settings)) is not None:
        print(f"  {certificate}")
    for warning in warnings:
        print(f"warning: {warning}")
    for spec in enabled:
        mode = getattr(settings.policy(spec.policy_section), "mode", None)
        print(f"  {spec.id:<18} schedule {settings.policy(spec.policy_section).schedule!r}"
              + (f", mode {mode}" if mode else ""))
    print(f"  {'notify':<18} " + notify_summary(settings))
    if not args.online:
        return EXIT_OK
    from agent.online_check import check_online

    missing = asyncio.run(check_online(settings, enabled))
    if missing:
        for job, permission in missing:
            print(f"MISSING permission {permission} (needed by {job})")
        from agent.errors import GraphPermissionError

        raise GraphPermissionError(", ".join(sorted({p for _, p in missing})))
    print("online check passed: token acquired, every needed Graph permission is granted")
    return EXIT_OK


def notify_summary(settings: Settings) -> str:
    """Where notifications go, without the webhook URL (a secret)."""
    cfg = settings.notify
    if not cfg.channels:
        return "off (no mail_to, no webhook_url)"
    where = []
    if cfg.mail_to:
        where.append(f"mail to {', '.join(cfg.mail_to)} from {cfg.sender}")
    if cfg.webhook_url is not None:
        where.append(f"webhook ({cfg.webhook_format})")
    return f"{'; '.join(where)}; events {', '.join(cfg.events)}; min_severity {cfg.min_severity}"


def cmd_rules(args: argparse.Namespace) -> int:
    from agent.rules import catalogue_json, catalogue_text

    sys.stdout.write(catalogue_json() if args.json else catalogue_text())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(Path(args.dir), users=args.users, devices=args.devices)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "jobs": cmd_jobs, "export": cmd_export, "report": cmd_report,
    "serve": cmd_serve,
    "audit": cmd_audit, "config": cmd_config, "demo": cmd_demo, "rules": cmd_rules,
    "veto": cmd_veto, "approve": cmd_approve,
}


# ---- output --------------------------------------------------------------------------------

def _print_json(report: RunReport) -> None:
    sys.stdout.writelines(report.json_pieces())  # the same document runs/ stores


def human(value: object) -> str:
    """A value for a person: never Python's `None`/`True`/`False`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def print_report(report: RunReport) -> None:
    from jobs import REGISTRY

    spec = REGISTRY.get(report.job)
    if spec is not None and not spec.changes_tenant:
        mode = "read-only"
    else:
        mode = "dry run: nothing changed" if report.dry_run else "enforced"
    print(f"{report.job}: {report.status} ({mode}, run {report.run_id})")
    for key, value in report.summary.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            print(f"  {key}: {human(value)}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            # e.g. offboarding's veto window: one line per entry, the customer acts on them
            print(f"  {key}:")
            for item in value[:LIST_LIMIT]:
                print("    - " + ", ".join(f"{k}={human(v)}" for k, v in item.items()))
            if len(value) > LIST_LIMIT:
                print(f"    ... {len(value) - LIST_LIMIT} more (see --json)")
    from agent.run_lines import report_lines

    for line in report_lines(report):  # each names its subjects, capped ("and N more")
        print(f"  {line}")
    for warning in report.warnings:
        print(f"  warning: {warning}")
    if report.error:
        print(f"  error: {report.error}")
