"""The environment-variable tables of ``docs/deploy.md``, read from every service's
pydantic-settings class (this is why the generator lives outside the libraries: it
imports the services).
"""

from __future__ import annotations

import importlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.paths import DEPLOY_DOC, ENV_TABLE_BEGIN, ENV_TABLE_END

SERVICES: tuple[tuple[str, str], ...] = (
    ("ingest-api", "clarion_ingest.settings"),
    ("aggregator", "clarion_aggregator.settings"),
    ("realtime-gateway", "clarion_gateway.settings"),
    ("push-worker", "clarion_push.settings"),
    ("email-worker", "clarion_email.settings"),
    ("analytics", "clarion_analytics.settings"),
)
"""(service name, module holding its settings class), in pipeline order."""


@dataclass(frozen=True)
class EnvVar:
    """One environment variable a service reads.

    Attributes:
        name: the variable, e.g. ``CLARION_PUSH_VAPID_SUBJECT``.
        field: the settings field it sets.
        default: the default as shown to operators (``unset`` for None).
        description: the field's description, plus allowed values for enumerations.
        secret: True for fields kept out of ``repr`` (keys, passwords).
        fallback: the shared ``CLARION_<FIELD>`` read when ``name`` is unset, if any.
    """

    name: str
    field: str
    default: str
    description: str
    secret: bool = False
    fallback: str | None = None


@dataclass
class ServiceEnv:
    """The variables of one service: its own fields, and the shared fields it reads."""

    service: str
    prefix: str
    own: list[EnvVar] = field(default_factory=list)
    shared: list[EnvVar] = field(default_factory=list)
    error: str | None = None


def _format_default(info: Any) -> str:
    value = info.default
    if info.default_factory is not None:
        if info.default_factory not in (list, dict, set, tuple):
            return "computed"  # e.g. the instance id: hostname and process id
        value = info.default_factory()
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, (list, tuple, dict, set)):
        return f"`{json.dumps(list(value) if isinstance(value, (set, tuple)) else value)}`"
    return f"`{value}`"


def _literal_values(annotation: Any) -> list[str]:
    values: list[str] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            values.extend(_literal_values(arg))
    return values


def _describe(info: Any) -> str:
    text = (info.description or "").strip().replace("|", "\\|").replace("\n", " ")
    choices = _literal_values(info.annotation)
    if choices:
        text = (text + "; " if text else "") + "one of " + ", ".join(f"`{c}`" for c in choices)
    return text


def settings_class(module_name: str) -> type[Any]:
    """The ``ServiceSettings`` subclass defined in ``module_name``.

    Raises:
        ImportError: the module cannot be imported.
        LookupError: it defines no ``ServiceSettings`` subclass.
    """
    from clarion_kit.settings import ServiceSettings

    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, ServiceSettings)
            and value is not ServiceSettings
            and value.__module__ == module_name
        ):
            return value
    raise LookupError(f"{module_name} defines no ServiceSettings subclass")


def service_env(service: str, module_name: str) -> ServiceEnv:
    """Every environment variable ``service`` reads, from its settings class.

    A field in :data:`clarion_kit.settings.SHARED_FIELDS` is read as
    ``<prefix><FIELD>`` first and ``CLARION_<FIELD>`` as fallback; any other field
    only as ``<prefix><FIELD>``. An import failure is recorded in ``error``.
    """
    from clarion_kit.settings import SHARED_ENV_PREFIX, SHARED_FIELDS

    try:
        cls = settings_class(module_name)
    except (ImportError, LookupError) as exc:
        return ServiceEnv(service, prefix="", error=f"{type(exc).__name__}: {exc}")
    prefix = str(cls.model_config.get("env_prefix", ""))
    result = ServiceEnv(service, prefix=prefix)
    for name, info in cls.model_fields.items():
        var = EnvVar(
            name=prefix + name.upper(),
            field=name,
            default=_format_default(info),
            description=_describe(info),
            secret=info.repr is False,
            fallback=SHARED_ENV_PREFIX + name.upper() if name in SHARED_FIELDS else None,
        )
        (result.shared if name in SHARED_FIELDS else result.own).append(var)
    return result


def all_service_env() -> list[ServiceEnv]:
    """:func:`service_env` of every service in :data:`SERVICES`."""
    return [service_env(service, module) for service, module in SERVICES]


def manifest_text(root: Path) -> dict[str, str]:
    """``{"compose": text, "k8s": text}`` of the deploy files that set variables."""
    compose = (root / "docker-compose.yml").read_text(encoding="utf-8")
    k8s_parts = [
        path.read_text(encoding="utf-8")
        for path in sorted((root / "k8s").rglob("*"))
        if path.is_file() and path.suffix in {".yaml", ".env"}
    ]
    return {"compose": compose, "k8s": "\n".join(k8s_parts)}


def _set_in(var: str, manifests: Mapping[str, str]) -> str:
    where = [name for name, text in manifests.items() if _mentions(text, var)]
    return ", ".join(where) if where else "optional"


def _mentions(text: str, var: str) -> bool:
    start = 0
    while (index := text.find(var, start)) >= 0:
        end = index + len(var)
        before = text[index - 1] if index else " "
        after = text[end] if end < len(text) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return True
        start = end
    return False


def _with_secret_note(var: EnvVar) -> str:
    if not var.secret:
        return var.description
    return "Secret (keep it in a Secret, not a ConfigMap)." + (
        " " + var.description if var.description else ""
    )


def render_env_table(envs: list[ServiceEnv], manifests: Mapping[str, str]) -> str:
    """Markdown tables of every variable: the shared ones, then one table per service.

    The "set in" column names the deploy files that set the variable (``compose``,
    ``k8s``); ``optional`` means none does and the default applies.
    """
    out: list[str] = []
    shared: dict[str, EnvVar] = {}
    for env in envs:
        for var in env.shared:
            if var.fallback:
                shared.setdefault(var.fallback, var)
    out.append("### Shared by every service\n")
    out.append(
        "Each service reads `<PREFIX><NAME>` first (e.g. `CLARION_INGEST_REDIS_URL`), "
        "then the shared `CLARION_<NAME>` below.\n"
    )
    out.append("| variable | default | set in | description |")
    out.append("| --- | --- | --- | --- |")
    for name in sorted(shared):
        var = shared[name]
        desc = _with_secret_note(var)
        out.append(f"| `{name}` | {var.default} | {_set_in(name, manifests)} | {desc} |")
    for env in envs:
        out.append("")
        if env.error:
            out.append(f"### {env.service}\n")
            out.append(f"Settings not importable: {env.error}")
            continue
        out.append(f"### {env.service} (`{env.prefix}`)\n")
        out.append("| variable | default | set in | description |")
        out.append("| --- | --- | --- | --- |")
        for var in env.own:
            desc = _with_secret_note(var)
            out.append(
                f"| `{var.name}` | {var.default} | {_set_in(var.name, manifests)} | {desc} |"
            )
    return "\n".join(out) + "\n"


def render_deploy_doc(current: str, table: str) -> str:
    """``current`` with the text between the env-table markers replaced by ``table``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    begin = current.find(ENV_TABLE_BEGIN)
    end = current.find(ENV_TABLE_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{DEPLOY_DOC} lacks the {ENV_TABLE_BEGIN!r} / {ENV_TABLE_END!r} markers")
    head = current[: begin + len(ENV_TABLE_BEGIN)]
    return head + "\n\n" + table + "\n" + current[end:]
