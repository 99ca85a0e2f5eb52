#!/usr/bin/env python3
"""Draw deploy/grafana/veil.json's panels from a real Prometheus, as a PNG.

Grafana is not in Debian's packages, so this draws the same panels (same
titles, same PromQL, same layout) with matplotlib from Prometheus range
queries. docs/dashboard/run.sh produces the data: Tansu, veil, Prometheus
and a load generator on 127.0.0.1.

    python3 docs/dashboard/render.py http://127.0.0.1:9090 START END docs/dashboard.png
"""

import json
import sys
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import requests  # noqa: E402

prom, start, end, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
dashboard = json.load(open("deploy/grafana/veil.json"))
STEP = 10


def query(expr):
    expr = expr.replace("$__rate_interval", "1m").replace('job=~"$job"', 'job=~".+"')
    r = requests.get(
        f"{prom}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": STEP},
        timeout=30,
    )
    r.raise_for_status()
    return r.json()["data"]["result"]


def instant(expr):
    expr = expr.replace('job=~"$job"', 'job=~".+"')
    r = requests.get(f"{prom}/api/v1/query", params={"query": expr, "time": end}, timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]


def legend(fmt, labels):
    for k, v in labels.items():
        fmt = fmt.replace("{{" + k + "}}", v)
    return fmt


panels = dashboard["panels"]
rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
fig = plt.figure(figsize=(18, rows * 0.5))
fig.suptitle(
    f"veil dashboard (deploy/grafana/veil.json) drawn from Prometheus, "
    f"{datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M}-{datetime.fromtimestamp(end, timezone.utc):%H:%M} UTC",
    fontsize=14,
    y=0.995,
)
grid = fig.add_gridspec(rows, 24, hspace=3.0, wspace=2.0, top=0.97, bottom=0.02)
for p in panels:
    g = p["gridPos"]
    ax = fig.add_subplot(grid[g["y"] : g["y"] + g["h"] - 1, g["x"] : g["x"] + g["w"]])
    ax.set_title(p["title"], fontsize=10, loc="left")
    if p["type"] == "table":
        result = instant(p["targets"][0]["expr"])
        cols = sorted({k for s in result for k in s["metric"]} - {"__name__"})
        cells = [[s["metric"].get(c, "")[:16] for c in cols] for s in result] or [["(none)"] * len(cols)]
        ax.axis("off")
        t = ax.table(cellText=cells, colLabels=cols, loc="upper left", cellLoc="left")
        t.auto_set_font_size(False)
        t.set_fontsize(8)
        continue
    for target in p["targets"]:
        for series in query(target["expr"]):
            xs = [datetime.fromtimestamp(float(t), timezone.utc) for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"]), linewidth=1.2)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    ax.set_ylabel({"ops": "per second", "s": "seconds", "bytes": "bytes"}.get(unit, ""), fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="upper left", ncol=2)
fig.savefig(out, dpi=80, bbox_inches="tight")
print(f"wrote {out}")
