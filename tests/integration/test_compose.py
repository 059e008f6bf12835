"""Static checks of the docker-compose stack (no Docker engine needed).

These guard what users of ``docker compose up`` rely on: the file parses, every
service and dependency exists, the pseudonymisation key must be supplied at
runtime and is never baked in, the MLflow build context cannot shadow the
``mlflow`` library, and every build context has a Dockerfile. When a compose
binary is installed, ``config`` is run on the real file as well.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

EXPECTED_SERVICES = {"postgres", "minio", "minio-init", "mlflow", "prefect-server", "worker"}
KEY_VAR = "PRIVGEN_PSEUDONYM_KEY"
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY$|^KEY$|PSEUDONYM)", re.IGNORECASE)
# "${VAR}", "${VAR:-default}", "${VAR:?message}" etc.; compose v1 and v2 syntax.
INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?])[^}]*)?\}")
URL_USERINFO = re.compile(r"://(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")
PLACEHOLDER = "__INTERPOLATED__"


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    svcs = compose.get("services")
    assert isinstance(svcs, dict) and svcs, "docker-compose.yml has no services"
    return svcs


def _environment(service: dict) -> dict[str, str | None]:
    """Normalise a service's ``environment`` (mapping or list form) to a dict."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            name, sep, value = str(item).partition("=")
            out[name] = value if sep else None
        return out
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def _depends_on(service: dict) -> list[str]:
    deps = service.get("depends_on") or []
    return list(deps) if isinstance(deps, (list, dict)) else [deps]


def _build_context(service: dict) -> tuple[Path, str] | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return REPO_ROOT / build, "Dockerfile"
    return REPO_ROOT / build.get("context", "."), build.get("dockerfile", "Dockerfile")


# --------------------------------------------------------------------------- structure


def test_compose_parses_without_obsolete_version_key(compose: dict) -> None:
    assert "version" not in compose, "compose spec: drop the obsolete top-level `version:`"


def test_expected_services_exist(services: dict) -> None:
    missing = EXPECTED_SERVICES - services.keys()
    assert not missing, f"missing services: {sorted(missing)}"


def test_every_depends_on_target_exists(services: dict) -> None:
    dangling = {
        f"{name} -> {dep}"
        for name, svc in services.items()
        for dep in _depends_on(svc)
        if dep not in services
    }
    assert not dangling, f"depends_on names unknown services: {sorted(dangling)}"


def test_startup_order_waits_for_health(services: dict) -> None:
    """Servers start only when their backing stores are usable, not merely started."""
    expected = {
        "minio-init": {"minio": "service_healthy"},
        "mlflow": {"postgres": "service_healthy", "minio-init": "service_completed_successfully"},
        "prefect-server": {"postgres": "service_healthy"},
        "worker": {"prefect-server": "service_healthy", "mlflow": "service_healthy"},
    }
    for name, deps in expected.items():
        declared = services[name].get("depends_on")
        assert isinstance(declared, dict), f"{name}: depends_on must use the long form"
        for dep, condition in deps.items():
            assert dep in declared, f"{name} must depend on {dep}"
            assert declared[dep].get("condition") == condition, (
                f"{name} -> {dep}: expected condition {condition!r}, got {declared[dep]!r}"
            )


def test_depended_on_healthy_services_define_healthchecks(services: dict) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on")
        if not isinstance(deps, dict):
            continue
        for dep, spec in deps.items():
            if (spec or {}).get("condition") == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {dep} to be healthy but {dep} has no healthcheck"
                )


def test_healthchecks_avoid_curl_and_wget(services: dict) -> None:
    """curl/wget are absent from the minio, mlflow (slim) and prefect images."""
    for name, svc in services.items():
        test = (svc.get("healthcheck") or {}).get("test")
        if not test:
            continue
        text = test if isinstance(test, str) else " ".join(map(str, test))
        assert not re.search(r"\b(curl|wget)\b", text), f"{name}: healthcheck uses curl/wget"


def test_only_named_volumes_and_the_data_bind(compose: dict, services: dict) -> None:
    declared = set((compose.get("volumes") or {}).keys())
    allowed_binds = {"./data", "./mlflow/initdb.sql"}
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            source = vol.get("source") if isinstance(vol, dict) else str(vol).split(":", 1)[0]
            if source.startswith((".", "/", "~")):
                assert source in allowed_binds, f"{name}: unexpected bind mount {source!r}"
            else:
                assert source in declared, f"{name}: volume {source!r} not declared at top level"


def test_worker_mounts_data_read_only(services: dict) -> None:
    vols = [str(v) for v in services["worker"].get("volumes") or []]
    data = [v for v in vols if v.startswith("./data:")]
    assert data, "worker must bind ./data"
    assert all(v.endswith(":ro") for v in data), f"./data must be read-only: {data}"


def test_initdb_creates_both_databases(services: dict) -> None:
    sql = (REPO_ROOT / "mlflow" / "initdb.sql").read_text()
    for db in ("mlflow", "prefect"):
        assert re.search(rf"CREATE\s+DATABASE\s+\"?{db}\"?", sql, re.IGNORECASE), db
    mounts = " ".join(map(str, services["postgres"].get("volumes") or []))
    assert "./mlflow/initdb.sql:/docker-entrypoint-initdb.d/" in mounts


def test_service_urls_point_at_the_right_databases(services: dict) -> None:
    mlflow_uri = _environment(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"] or ""
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which the MLflow image lacks.
    assert mlflow_uri.startswith("postgresql+psycopg2://")
    assert mlflow_uri.endswith("@postgres:5432/mlflow")
    prefect_uri = (
        _environment(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"] or ""
    )
    assert prefect_uri.startswith("postgresql+asyncpg://")
    assert prefect_uri.endswith("@postgres:5432/prefect")
    worker = _environment(services["worker"])
    assert worker["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


# --------------------------------------------------------------------------- secrets


def test_pseudonym_key_is_required_with_no_default(services: dict) -> None:
    value = _environment(services["worker"]).get(KEY_VAR)
    assert value is not None, f"worker must pass {KEY_VAR}"
    assert re.fullmatch(rf"\$\{{{KEY_VAR}:\?[^}}]*\}}", value), (
        f"{KEY_VAR} must be exactly ${{{KEY_VAR}:?message}} (required, no default), got {value!r}"
    )


def test_pseudonym_key_never_defaulted_anywhere() -> None:
    text = COMPOSE_FILE.read_text()
    for match in re.finditer(rf"\$\{{{KEY_VAR}([^}}]*)\}}", text):
        assert match.group(1).startswith(":?"), (
            f"{KEY_VAR} interpolated with a default: {match.group(0)}"
        )
    # Not passed to any other service.
    assert len(re.findall(rf"^\s*-?\s*{KEY_VAR}\s*[:=]", text, re.MULTILINE)) == 1


def test_no_hard_coded_secret_values(services: dict) -> None:
    """Secret-looking env vars and URL passwords must come from interpolation."""
    offenders = []
    for name, svc in services.items():
        for var, value in _environment(svc).items():
            if value is None:
                continue  # passed through from the host environment
            if SECRET_NAME.search(var) and not INTERPOLATION.fullmatch(value):
                offenders.append(f"{name}.{var}={value!r}")
            # Mask ${...} first: their ":-default" parts contain ':' themselves.
            for m in URL_USERINFO.finditer(INTERPOLATION.sub(PLACEHOLDER, value)):
                if m.group("password") != PLACEHOLDER:
                    offenders.append(f"{name}.{var}: literal password in URL")
    assert not offenders, f"hard-coded secrets: {offenders}"


def _dockerfile_instructions(dockerfile: Path) -> list[str]:
    """Instructions with comments dropped and backslash continuations joined."""
    lines = [ln for ln in dockerfile.read_text().splitlines() if not ln.lstrip().startswith("#")]
    return [i.strip() for i in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines() if i.strip()]


def test_dockerfiles_do_not_bake_in_secrets() -> None:
    secret_like = re.compile(rf"({KEY_VAR}|PASSWORD|SECRET|ACCESS_KEY|TOKEN)", re.IGNORECASE)
    for dockerfile in (REPO_ROOT / "Dockerfile", REPO_ROOT / "mlflow" / "Dockerfile"):
        for instr in _dockerfile_instructions(dockerfile):
            if re.match(r"(ENV|ARG)\s", instr, re.IGNORECASE):
                assert not secret_like.search(instr), f"{dockerfile}: secret-like ENV/ARG: {instr}"


def test_dockerignore_keeps_data_secrets_and_state_out_of_the_image() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    required = {
        ".venv",
        ".git",
        "runs",
        "mlruns",
        "mlartifacts",
        "mlflow.db",
        ".privgen",
        "outputs",
        "data",
        ".env",
    }
    missing = required - patterns
    assert not missing, f".dockerignore must exclude {sorted(missing)}"
    assert "**/__pycache__" in patterns, "__pycache__ must be excluded at any depth"


# --------------------------------------------------------------------------- images


def test_mlflow_dir_has_no_python_files() -> None:
    mlflow_dir = REPO_ROOT / "mlflow"
    assert mlflow_dir.is_dir()
    assert not (mlflow_dir / "__init__.py").exists(), (
        "mlflow/__init__.py would shadow the mlflow library"
    )
    py_files = sorted(str(p.relative_to(REPO_ROOT)) for p in mlflow_dir.rglob("*.py"))
    assert not py_files, f"mlflow/ must not contain Python files: {py_files}"


def test_every_build_context_has_a_dockerfile(services: dict) -> None:
    contexts = {name: _build_context(svc) for name, svc in services.items()}
    contexts = {k: v for k, v in contexts.items() if v is not None}
    assert {"mlflow", "worker"} <= contexts.keys()
    for name, (context, dockerfile) in contexts.items():
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} missing"


def test_images_are_pinned(services: dict) -> None:
    for name, svc in services.items():
        image = svc.get("image")
        if image:
            assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"


# --------------------------------------------------------------------------- compose binary


def _compose_command() -> list[str] | None:
    """Return a working compose CLI (v1 binary or v2 plugin), or None."""
    candidates: list[list[str]] = []
    if exe := shutil.which("docker-compose"):
        candidates.append([exe])
    if exe := shutil.which("docker"):
        candidates.append([exe, "compose"])
    for cmd in candidates:
        try:
            probe = subprocess.run(
                [*cmd, "version"], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return cmd
    return None


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    cmd = _compose_command()
    if cmd is None:
        pytest.skip(
            "no compose CLI: neither `docker-compose` nor the `docker compose` plugin is "
            "installed (e.g. `apt-get install docker-compose`); static checks above still ran"
        )
    return cmd


def _run_config(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _clean_env() -> dict[str, str]:
    # Drop compose-relevant variables that could mask what is being tested.
    env = {k: v for k, v in os.environ.items() if k not in (KEY_VAR, *SERVER_SECRETS)
           and not k.startswith("COMPOSE_")}
    env["COMPOSE_PROJECT_NAME"] = "privgen-test"
    return env


# The MLflow server's admin password and CSRF key have no default: a stack started without
# them would run with credentials anyone can read in this file.
SERVER_SECRETS = ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY")


def _with_secrets(env: dict[str, str], skip: str | None = None) -> dict[str, str]:
    return {**env, KEY_VAR: "test-only-not-a-real-key",
            **{k: f"test-only-{k.lower()}" for k in SERVER_SECRETS if k != skip}}


def test_compose_config_valid_with_key(compose_cmd: list[str]) -> None:
    result = _run_config(compose_cmd, _with_secrets(_clean_env()))
    assert result.returncode == 0, f"`config` failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("missing", SERVER_SECRETS)
def test_compose_config_fails_without_a_server_secret(compose_cmd: list[str],
                                                      missing: str) -> None:
    env = {k: v for k, v in _with_secrets(_clean_env(), skip=missing).items() if k != missing}
    result = _run_config(compose_cmd, env)
    assert result.returncode != 0 and missing in result.stdout + result.stderr, (
        f"`config` must fail naming {missing}:\n{result.stdout}\n{result.stderr}")


def test_compose_config_fails_without_key(compose_cmd: list[str]) -> None:
    env = {k: v for k, v in _with_secrets(_clean_env()).items() if k != KEY_VAR}
    result = _run_config(compose_cmd, env)
    assert result.returncode != 0, "`config` must fail when PRIVGEN_PSEUDONYM_KEY is unset"
    assert KEY_VAR in result.stdout + result.stderr, (
        f"error should name {KEY_VAR}:\n{result.stdout}\n{result.stderr}"
    )
