"""``l2l store ...``: inspect, verify, commit, repair and export a feature store."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

from .common import fail


def _open(path):
    from ..store import StoreError, open_store
    try:
        return open_store(path)
    except StoreError as e:
        fail(str(e))


@click.group("store")
def store_group():
    """Inspect and maintain a feature store."""


@store_group.command("info")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.option("--failures", "show_failures", is_flag=True, help="List every failure with its reason.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(store, show_failures, as_json):
    """Summary of STORE: videos per subset, arrays and their provenance, costs, failures."""
    st = _open(store)
    inf = st.info()
    ids = st.ids()
    subsets = Counter(st.meta(v).subset for v in ids)
    moments = sum(st.meta(v).num_moments for v in ids)
    no_audio = sum(1 for v in ids if not st.meta(v).has_audio)
    arrays: dict[str, dict] = {}
    for v in ids:
        for name, r in st.records(v).items():
            a = arrays.setdefault(name, {"videos": 0, "stage": r.stage, "configs": set(),
                                         "dtype": r.dtype, "shape": list(r.shape[1:])})
            a["videos"] += 1
            a["configs"].add(json.dumps(r.config, sort_keys=True))
    fails = st.failures()
    if as_json:
        out = {"info": inf, "videos": len(ids), "subsets": dict(subsets), "moments": moments,
               "no_audio": no_audio, "failures": [f.__dict__ for f in fails],
               "arrays": {k: {**a, "configs": sorted(a["configs"])} for k, a in arrays.items()}}
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"store      {st.path} ({inf['backend']}, schema {inf['schema_version']}, "
               f"generation {inf['generation']})")
    click.echo(f"dataset    {inf.get('dataset', '?')}, {len(inf.get('classes', []))} classes")
    click.echo(f"videos     {len(ids)} ({', '.join(f'{k} {n}' for k, n in sorted(subsets.items())) or '-'}),"
               f" {moments} moments, {no_audio} without audio")
    for name, a in sorted(arrays.items()):
        cfgs = len(a["configs"])
        click.echo(f"array      {name:<14} {a['dtype']:<8} (N, {', '.join(map(str, a['shape']))})"
                   f"  {a['videos']} videos, stage {a['stage']}"
                   + (f"  WARNING: {cfgs} configs" if cfgs > 1 else ""))
    for name, f in sorted(inf.get("flops_per_moment", {}).items()):
        click.echo(f"cost       {name:<14} {f / 1e9:.3f} GFLOPs per moment")
    click.echo(f"failures   {len(fails)}")
    for f in fails if show_failures else fails[:5]:
        click.echo(f"  [{f.stage}] {f.reason}")
    if len(fails) > 5 and not show_failures:
        click.echo(f"  ... {len(fails) - 5} more (--failures)")


@store_group.command("verify")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
def verify(store):
    """Check every video is complete and consistent and every checksum matches."""
    st = _open(store)
    problems = st.verify()
    for p in problems:
        click.echo(p)
    if problems:
        fail(f"{store}: {len(problems)} problem(s); `l2l store repair {store}` drops the affected "
             "videos so that a rerun of extract redoes exactly those")
    click.echo(f"{store}: OK ({len(st.ids())} videos verified)")


@store_group.command("repair")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
def repair(store):
    """Drop the videos `verify` finds broken; rerun `l2l extract` to redo exactly those."""
    st = _open(store)
    st.commit()
    # A problem starts with "<id>/<array>: " or "<id>: "; ids may themselves contain ':', so
    # take the longest stored id that the problem starts with.
    ids = set(st.ids())
    bad = set()
    for p in st.verify():
        named = [p[:i] for i, c in enumerate(p) if c in "/:" and p[:i] in ids]
        if named:
            bad.add(max(named, key=len))
    bad = sorted(bad)
    st.remove(bad)
    click.echo(f"dropped {len(bad)} video(s): {', '.join(bad) or '-'}; rerun `l2l extract` to redo them")


@store_group.command("commit")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
def commit(store):
    """Fold staged parcels (left by a crashed or running extract) into the store."""
    click.echo(json.dumps(_open(store).commit()))


@store_group.command("export")
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["hdf5", "zarr"]), default="hdf5")
def export(store, out, fmt):
    """Copy STORE into a new store OUT of another format (one compact segment)."""
    from ..store import StoreError, export_store
    try:
        dst = export_store(_open(store), out, fmt)
    except StoreError as e:
        fail(str(e))
    click.echo(f"exported {len(dst.ids())} videos to {out} ({fmt})")


commands = [store_group]
