"""`--plot out.png`: the rows of a sweep as a chart (matplotlib, an optional extra:
pip install 'tpp[plot]').

One line per contender and series (kind, dtype, threads): GFLOP/s for GEMM-like
rows, GB/s for elementwise ones, against the size; the measured peak as a
dashed line where the rows are GFLOP/s.
"""
from __future__ import annotations

from collections import defaultdict

CONTENDERS = (("tpp_kernel", "tpp kernel"), ("tpp_call", "tpp call"), ("tpp", "tpp"), ("numpy", "numpy"))


class PlotUnavailable(RuntimeError):
    pass


def _metric(rows: list[dict]) -> tuple[str, str]:
    for row in rows:
        for key, _ in CONTENDERS:
            if isinstance(row.get(key), dict):
                if "gflops" in row[key]:
                    return "gflops", "GFLOP/s"
                if "gbps" in row[key]:
                    return "gbps", "GB/s"
    raise PlotUnavailable("these rows have no GFLOP/s or GB/s figures to plot")


def _series(row: dict) -> str:
    parts = [str(row.get("op", row.get("suite", "")))]
    for key in ("variant", "dtype", "layout"):
        if row.get(key) not in (None, "", "A B"):
            parts.append(str(row[key]))
    if row.get("suite") == "matmul":
        parts.append(f"{row.get('threads')} thr")
    return " ".join(parts)


def pyplot(rows: list[dict]):
    """(matplotlib.pyplot with the file backend, the rows without errors), or
    PlotUnavailable saying why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'tpp[plot]'") from exc
    rows = [r for r in rows if "error" not in r]
    if not rows:
        raise PlotUnavailable("no rows to plot")
    return plt, rows


def plot(rows: list[dict], info: dict, path: str) -> str:
    """Write the chart to `path`; returns the path."""
    plt, rows = pyplot(rows)
    metric, unit = _metric(rows)
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    lines = defaultdict(dict)
    for row in rows:
        for key, name in CONTENDERS:
            value = row.get(key, {}).get(metric) if isinstance(row.get(key), dict) else None
            if value is not None:
                lines[f"{name}: {_series(row)}"][row["shape"]] = value
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, points in lines.items():
        xs = [i for i, s in enumerate(shapes) if s in points]
        ax.plot(xs, [points[shapes[i]] for i in xs], marker="o", linestyle="--" if label.startswith("numpy")
                else "-", label=label)
    peak = info.get("peak", {}).get("gflops") if metric == "gflops" else None
    if peak:
        ax.axhline(peak, color="grey", linestyle=":", label=f"measured peak {peak:.0f} GFLOP/s")
    ax.set_xticks(range(len(shapes)), shapes, rotation=30 if len(shapes) > 6 else 0)
    ax.set_xlabel("size")
    ax.set_ylabel(unit)
    ax.set_ylim(bottom=0)
    return save(plt, fig, ax, f"tpp-bench on {info.get('target', '?')} ({info.get('cpu', '?')})", path)


def save(plt, fig, ax, title: str, path: str) -> str:
    """Title, grid and legend in the suites' one style; the figure written to `path`."""
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
