"""One error hierarchy; each error knows the exit code the CLI ends with.

Exit codes (product-spec): 0 run completed, 1 audit log not intact / internal error,
2 usage or configuration error, 3 cannot reach or authenticate to Graph or a permission
is missing, 4 the run completed but some actions failed.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_GRAPH = 3
EXIT_PARTIAL = 4


class DapError(Exception):
    """Base of every error the CLI turns into a message and an exit code."""

    exit_code = EXIT_INTERNAL


class UsageError(DapError):
    exit_code = EXIT_USAGE


class ConfigError(DapError):
    """All problems of a configuration at once, each 'source: key: problem'."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


class LockBusyError(DapError):
    """Another process runs the same job."""

    exit_code = EXIT_USAGE


class RunInterrupted(DapError):
    """The daemon is stopping: the run ends after the change in progress (exit 4)."""

    exit_code = EXIT_PARTIAL


class GraphError(DapError):
    """Graph answered with an error. Carries Graph's code, message and request id."""

    exit_code = EXIT_GRAPH

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.request_id = request_id
        super().__init__(message)


class GraphNotFoundError(GraphError):
    """404: the object does not exist (on a delete: already gone)."""


class GraphAuthError(GraphError):
    """Cannot authenticate (401, token request refused, bad certificate)."""


class GraphPermissionError(GraphAuthError):
    """403: the app lacks a Graph permission; the message names it."""

    def __init__(self, permission: str, *, request_id: str | None = None,
                 code: str | None = None, detail: str = "") -> None:
        self.permission = permission
        msg = (f"missing Graph permission {permission}: grant the application permission "
               f"'{permission}' to the app registration and give admin consent")
        if detail:
            msg += f" ({detail})"
        super().__init__(msg, status=403, code=code, request_id=request_id)


class GraphUnavailableError(GraphError):
    """Graph could not be reached or stayed throttled/unavailable past the retry budget."""


class GraphDataError(GraphError):
    """Graph returned something we cannot trust (malformed JSON, truncated list)."""


class UnsafePathError(DapError):
    """A symlink or special file where the agent keeps its state (someone planted it):
    refused, nothing written through it. Exit 2, like any unusable state dir."""

    exit_code = EXIT_USAGE


class DiskFullError(DapError):
    """No space left (or quota exceeded) writing a file: names the path and what was not
    done."""

    def __init__(self, path: object, not_done: str) -> None:
        self.path = path
        super().__init__(f"{path}: no space left on the file system (or quota exceeded): "
                         f"{not_done}; free space there and run again")
