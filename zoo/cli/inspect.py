"""Commands that describe what is installed: list, info, plugins, dataset."""

from __future__ import annotations

import click

from zoo.cli.common import echo, emit_json, table

KINDS = ("architectures", "datasets", "optimizers", "losses", "criteria", "schedules",
         "metrics")


def _spec_kind(kind: str):
    from zoo import spec

    return {"datasets": spec.DATASET, "optimizers": spec.OPTIMIZER, "losses": spec.LOSS,
            "criteria": spec.CRITERION, "schedules": spec.SCHEDULE}.get(kind)


def _summary(obj) -> str:
    summary = getattr(obj, "summary", None)
    if summary:
        return summary
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def _entry(kind: str, name: str, obj, owner: str) -> dict:
    entry: dict[str, object] = {"name": name, "summary": _summary(obj), "plugin": owner}
    if kind == "architectures":
        entry["tasks"] = list(obj.tasks)
    if kind == "datasets":
        entry.update(task=obj.task, kind=obj.kind)
    if kind == "schedules":
        entry["per"] = obj.per
    if kind == "metrics":
        entry.update(tasks=list(obj.tasks), maximise=obj.maximise, every_epoch=obj.every_epoch)
    spec_kind = _spec_kind(kind)
    if spec_kind is not None:  # what a spec may set, read from the factory's signature
        from zoo.spec import describe_parameters

        entry["parameters"] = describe_parameters(obj.load if kind == "datasets" else obj,
                                                  spec_kind)
    return entry


def _call_form(name: str, entry: dict) -> str:
    """``sgd(momentum=0.0, nesterov=false)``: a name with the parameters a spec may set."""
    from zoo.spec import format_value

    params = entry.get("parameters")
    if not params:
        return name
    return name + "(" + ", ".join(p["name"] if p["required"] else
                                  f"{p['name']}={format_value(p['default'])}"
                                  for p in params) + ")"


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def list_command(kind, as_json):
    """List installed architectures, datasets, optimizers, losses, stopping criteria, schedules
    and metrics, with the parameters a spec may set (e.g. --optimizer "sgd(momentum=0.9)")."""
    from zoo.plugins import get_host

    host = get_host()
    kinds = [kind] if kind else list(KINDS)
    listing = {k: [_entry(k, name, obj, host.registries[k].owner(name))
                   for name, obj in host.registries[k].items()] for k in kinds}
    if as_json:
        emit_json(listing)
        return
    for k in kinds:
        click.echo(f"{k}:")
        for entry in listing[k]:
            extra = ""
            if k == "architectures":
                extra = f" [{', '.join(entry['tasks'])}]"
            elif k == "datasets":
                extra = f" [{entry['task']}, {entry['kind']}]"
            elif k == "schedules":
                extra = f" [per {entry['per']}]"
            elif k == "metrics":
                extra = f" [{', '.join(entry['tasks'])}]"
            click.echo(f"  {entry['name']:<24}{entry['summary']}{extra}")
            if entry.get("parameters"):
                click.echo(f"  {'':<24}{_call_form(entry['name'], entry)}")
        if not listing[k]:
            click.echo("  (none)")


def _component_info(host, name: str, as_json: bool) -> bool:
    """``zoo info`` of an optimizer, loss, schedule, dataset, criterion or metric; False when
    ``name`` is none of these."""
    found = [k for k in KINDS[1:] if name in host.registries[k]]
    if not found:
        return False
    infos = []
    for kind in found:
        registry = host.registries[kind]
        canonical = registry.canonical(name)
        entry = _entry(kind, canonical, registry.get(canonical), registry.owner(canonical))
        entry["kind"] = host.registries[kind].label
        infos.append(entry)
    if as_json:
        emit_json(infos[0] if len(infos) == 1 else {"matches": infos})
        return True
    for entry in infos:
        click.echo(f"{entry['name']} ({entry['kind']}, plugin {entry['plugin']}): "
                   f"{entry['summary']}")
        if "per" in entry:
            click.echo(f"changes the learning rate every {entry['per']}")
        if "tasks" in entry:
            click.echo(f"tasks: {', '.join(entry['tasks'])}")
        params = entry.get("parameters")
        if params:
            click.echo(f"spec: {_call_form(entry['name'], entry)}")
            click.echo(table([[p["name"], "required" if p["required"] else p["default"]]
                              for p in params], ["parameter", "default"]))
        elif params is not None:
            click.echo(f"spec: {entry['name']} (no parameters)")
    return True


def model_for(architecture, dataset_name: str | None):
    """``(model, dataset name)``: the model ``architecture`` builds, with its default options,
    for a dataset, built in float32 as ``zoo train`` builds it; ``(None, reason)`` when no
    dataset was named and the default one does not suit the architecture."""
    import numpy as np

    from zoo.data import DEFAULT_DATASET
    from zoo.data.load import load_dataset
    from zoo.errors import ConfigError
    from zoo.sizing import parameter_budget

    dataset = load_dataset(dataset_name or DEFAULT_DATASET)
    try:
        if dataset.kind not in architecture.data_kinds:
            raise ConfigError(f"architecture {architecture.name} works on "
                              f"{', '.join(architecture.data_kinds)} data; dataset "
                              f"{dataset.name} is {dataset.kind} data")
        spec = dataset.spec.with_task(architecture.task_for(dataset.task))
    except ConfigError as exc:
        if dataset_name is not None:
            raise
        return None, f"{exc}; pass --dataset"
    with parameter_budget(f"architecture {architecture.name} on {dataset.name}"):
        model = architecture.build(spec, dict(architecture.resolve_options()))
        model.build(spec.input_shape, np.random.default_rng([0, 1]), dtype=np.float32)
    return model, dataset.name


def model_summary(model) -> str:
    """``model.summary()``, or one line for a model that is a single layer without one."""
    summary = getattr(model, "summary", None)
    if callable(summary):
        return summary()
    return f"{model!r}  output (N, {', '.join(map(str, model.output_shape))})\n" \
           f"total parameters: {model.num_params:,}"


@click.command("info")
@click.argument("arch", metavar="NAME")
@click.option("--dataset", default=None, metavar="NAME",
              help="Show the model the architecture builds for this dataset, with its default "
                   "options (default: mnist1d, when the architecture takes it).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def info_command(arch, dataset, as_json):
    """Show an architecture's options, defaults, tasks and the model it builds, or the
    parameters of an optimizer, loss, schedule, dataset, stopping criterion or metric."""
    from zoo.errors import ConfigError
    from zoo.plugins import get_host

    host = get_host()
    if arch not in host.architectures:
        if dataset is not None and any(arch in host.registries[k] for k in KINDS[1:]):
            raise ConfigError(f"--dataset shows the model an architecture builds; {arch} is "
                              "not an architecture")
        if _component_info(host, arch, as_json):
            return
    a = host.architectures.get(arch)
    model, built_for = model_for(a, dataset)
    options = [{"name": o.name, "type": o.type_name(),
                "default": list(o.default) if isinstance(o.default, tuple) else o.default,
                "choices": list(o.choices) if o.choices else None, "help": o.help,
                "minimum": o.minimum, "maximum": o.maximum,
                "exclusive_maximum": o.exclusive_maximum, "min_items": o.min_items,
                "log": o.log, "expected": o.expected()}
               for o in a.options]
    info = {"name": a.name, "summary": a.summary, "tasks": list(a.tasks),
            "data_kinds": list(a.data_kinds), "plugin": a.plugin, "options": options,
            "training_defaults": a.defaults, "preset_training_defaults": a.presets,
            "search_space": tune_space(a)}
    if model is None:
        info["model"] = {"dataset": None, "note": built_for}
    else:
        info["model"] = {"dataset": built_for, "input_shape": list(model.input_shape),
                         "output_shape": list(model.output_shape),
                         "params": int(model.num_params), "summary": model_summary(model)}
    if as_json:
        emit_json(info)
        return
    click.echo(f"{a.name}: {a.summary}")
    click.echo(f"tasks: {', '.join(a.tasks)}    data: {', '.join(a.data_kinds)}    "
               f"plugin: {a.plugin}")
    if a.defaults:
        click.echo("training defaults: " + ", ".join(f"{k}={v}" for k, v in a.defaults.items()))
    for preset, defaults in a.presets.items():
        click.echo(f"with preset={preset}: " + ", ".join(f"{k}={v}" for k, v in defaults.items()))
    click.echo("zoo compare --tune searches: " + ", ".join(
        f"{k} {v}" for k, v in info["search_space"].items()))
    if options:
        rows = []
        for o in options:
            default = o["default"]
            default = ",".join(map(str, default)) if isinstance(default, list) else default
            ranged = o["choices"] or o["minimum"] is not None or o["maximum"] is not None
            helptext = o["help"] + (f" ({o['expected']})" if ranged else "")
            rows.append([o["name"], o["type"], default, helptext])
        click.echo("\noptions (-o NAME=VALUE):")
        click.echo(table(rows, ["name", "type", "default", "help"]))
    if model is None:
        click.echo(f"\nmodel: not shown: {built_for}")
    else:
        click.echo(f"\nmodel for {built_for} (input {tuple(model.input_shape)}, default "
                   "options):")
        click.echo(model_summary(model))


def tune_space(arch) -> dict:
    """What ``zoo compare --tune`` searches for ``arch`` when nothing is fixed."""
    from zoo.compare.tune import Space

    return Space(arch, {}, {}).describe()


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--all", "show_all", is_flag=True, help="Include zoo's core component plugins.")
def plugins_command(as_json, show_all):
    """List loaded plugins, their versions, hooks, what they registered, and failures."""
    from zoo.plugins import get_host

    records = [r for r in get_host().records.values() if show_all or not r.builtin]
    if as_json:
        emit_json({"plugins": [r.to_dict() for r in records]})
        return
    for r in records:
        status = f"FAILED: {r.error}" if r.error else "ok"
        click.echo(f"{r.name} {r.version or ''}  ({r.module})  {status}".replace("  (", " (", 1))
        if r.hooks:
            click.echo(f"  hooks: {', '.join(r.hooks)}")
        for kind, names in r.registered.items():
            click.echo(f"  {kind}: {', '.join(names)}")


@click.command("dataset")
@click.argument("name")
@click.option("--export", "export_path", type=click.Path(dir_okay=False),
              help="Write the train and test splits as arrays to this .npz file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def dataset_command(name, export_path, as_json):
    """Describe a dataset (task, shapes, classes, source, licence) and optionally export it."""
    from zoo.data.load import export_dataset, load_dataset

    ds = load_dataset(name)
    info = ds.describe()
    if export_path:
        export_dataset(ds, export_path)
        info["exported_to"] = export_path
    if as_json:
        emit_json(info)
        return
    width = max(len(key) for key in info) + 2
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        echo(f"{key + ':':<{width}}{value}", as_json)


COMMANDS = [list_command, info_command, plugins_command, dataset_command]
