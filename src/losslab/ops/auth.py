"""Authentication for the team server: MLflow's basic-auth app, its secrets under ``<run_dir>/auth/``.

    make server AUTH=1                    # python -m losslab.ops.server start --auth
    make server-user NAME=ana             # python -m losslab.ops.server user ana [--permission READ]

``make server AUTH=1`` starts ``mlflow server --app-name basic-auth`` (the ``mlflow[auth]`` extra). Everything
it needs is generated once into ``<run_dir>/auth/`` (folder mode 700, files mode 600): the Flask secret key
(``MLFLOW_FLASK_SERVER_SECRET_KEY``), the admin's password and the auth config (users and permissions in
``basic_auth.db`` there). MLflow 3.17 ships no default admin password: the first start creates ``admin``
with the generated one (``MLFLOW_AUTH_ADMIN_PASSWORD``, read only while no admin exists) and says once
where it is. ``make server-user`` adds a user with a generated password and grants it EDIT (or the given
permission) on every experiment and registered model of the server plus ``tracking.experiment``
(created if missing). Clients sign in with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``;
requests without credentials get 401, and a user without the permission 403.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any, Iterator

from losslab import environ
from losslab.errors import ConfigError

PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")


def auth_dir(run_dir: Path) -> Path:
    folder = run_dir / "auth"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created mode 600, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def secret(path: Path) -> str:
    """The secret kept in ``path``, generated (mode 600) the first time."""
    if not path.is_file():
        private_file(path, secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def server_env(run_dir: Path, cfg: Any) -> tuple[dict[str, str], bool]:
    """Environment for ``mlflow server --app-name basic-auth`` and whether this is the first start (no admin yet)."""
    folder = auth_dir(run_dir)
    first = not (folder / "basic_auth.db").is_file()
    ini = folder / "basic_auth.ini"
    private_file(ini, "[mlflow]\n"
                      f"default_permission = {cfg.default_permission}\n"
                      f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
                      f"admin_username = {cfg.admin_username}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      # a checked password is remembered this long: without it every request pays a PBKDF2 hash
                      # (0.3-0.9 s on 2 busy cores); changes made through the API invalidate it (one worker)
                      f"auth_cache_ttl_seconds = {int(cfg.get('cache_seconds') or 0)}\n")
    env = {"MLFLOW_FLASK_SERVER_SECRET_KEY": secret(folder / "secret_key"), "MLFLOW_AUTH_CONFIG_PATH": str(ini),
           "MLFLOW_AUTH_ADMIN_PASSWORD": secret(folder / "admin_password")}
    return env, first


def first_start_message(run_dir: Path, cfg: Any) -> str:
    path = run_dir / "auth" / "admin_password"
    return (f"basic-auth: admin user '{cfg.admin_username}' created with a generated password (there is no default); "
            f"read it with: cat {path}  (mode 600, printed nowhere else). Add teammates: make server-user NAME=<name>")


@contextlib.contextmanager
def signed_in(username: str, password: str) -> Iterator[None]:
    """MLflow's client credentials (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) for the block, then as before."""
    with environ.scoped({"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}):
        yield


def project_experiments(client: Any, experiment: str) -> list[Any]:
    """Every active experiment of the server, ``experiment`` created first if missing."""
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment)
    return [e for e in client.search_experiments() if e.lifecycle_stage == "active"]


def add_user(uri: str, run_dir: Path, cfg: Any, name: str, permission: str, experiment: str) -> Path:
    """Create user ``name`` with a generated password (kept in ``<run_dir>/auth/users/<name>``, mode 600)
    and grant ``permission`` on the project's experiments and registered models; returns the password file."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from losslab.console import ignore_warning

    ignore_warning(r"starlette\.middleware\.wsgi is deprecated")  # raised by MLflow's own server imports
    from mlflow.server.auth.client import AuthServiceClient

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", name):
        raise ConfigError(f"user name '{name}': use letters, digits and _ . @ - (at most 64 characters).")
    permission = permission.upper()
    if permission not in PERMISSIONS:
        raise ConfigError(f"permission '{permission}': one of {', '.join(PERMISSIONS)}.")
    folder = auth_dir(run_dir)
    admin_password = folder / "admin_password"
    if not admin_password.is_file():
        raise ConfigError(f"no {admin_password}: start the server with authentication first (make server AUTH=1).")
    password = secrets.token_urlsafe(18)
    with signed_in(str(cfg.admin_username), admin_password.read_text().strip()):
        auth = AuthServiceClient(uri)
        try:
            auth.create_user(name, password)
        except MlflowException as exc:
            if "already exists" in str(exc) or "RESOURCE_ALREADY_EXISTS" in str(exc):
                raise ConfigError(f"user '{name}' already exists on {uri}; pick another name.") from None
            if "401" in str(exc) or "Unauthorized" in str(exc):
                raise ConfigError(f"{uri} refused the admin's credentials from {admin_password} (or runs without "
                                  "authentication: make server-stop, then make server AUTH=1).") from None
            raise
        tracking = MlflowClient(uri)
        granted = 0
        for found in project_experiments(tracking, experiment):
            auth.grant_user_permission(name, "experiment", found.experiment_id, permission)
            granted += 1
        for model in tracking.search_registered_models():
            auth.grant_user_permission(name, "registered_model", model.name, permission)
    users = folder / "users"
    users.mkdir(exist_ok=True)
    users.chmod(0o700)
    path = users / name
    private_file(path, password + "\n")
    print(f"user '{name}' created on {uri} with {permission} on {granted} experiment(s) and every registered model; "
          f"password in {path} (mode 600). The user signs in with:\n"
          f"  export MLFLOW_TRACKING_USERNAME={name} MLFLOW_TRACKING_PASSWORD=\"$(cat {path})\"", file=sys.stderr)
    return path
