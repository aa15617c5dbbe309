// Time-series charts on uPlot, in the page's colours, resized with their panel and
// redrawn when the system switches between light and dark.
"use strict";
(function (root) {
  const charts = [];
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  // Y ticks in a few characters (1.5k, 400k, 2.1M), so large values fit the fixed axis width.
  function compact(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return `${+(v / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
    if (a >= 1e3) return `${+(v / 1e3).toFixed(a >= 1e4 ? 0 : 1)}k`;
    return `${+v.toFixed(2)}`;
  }

  function axes() {
    const stroke = css("--muted"), grid = { stroke: css("--line"), width: 1 };
    return [
      { stroke, grid, ticks: grid },
      { stroke, grid, ticks: grid, size: 56, values: (u, splits) => splits.map(compact) },
    ];
  }

  /**
   * A chart in `el`. `spec.series` is a list of {label, color (CSS variable), fill?, dash?, points?, width?};
   * `spec.bands` a list of [upper, lower] series numbers (1-based) with a fill colour variable.
   */
  function chart(el, spec) {
    let plot = null;
    let data = null;

    function options() {
      const height = el.classList.contains("tall") ? 260 : 180;
      return {
        width: Math.max(el.clientWidth, 200), height,
        legend: { show: spec.legend !== false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: spec.time !== false }, y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
        axes: axes(),
        series: [{ label: spec.xLabel || "time" }, ...spec.series.map((s) => ({
          label: s.label,
          stroke: s.color ? css(s.color) : "transparent",
          fill: s.fill ? css(s.fill) : undefined,
          width: s.width ?? 2,
          dash: s.dash,
          points: { show: !!s.points, size: 5, fill: s.color ? css(s.color) : undefined },
          spanGaps: s.spanGaps ?? false,
          value: (u, v) => (v == null ? "–" : (spec.format || fmt)(v)),
        }))],
        bands: (spec.bands || []).map(([a, b, fill]) => ({ series: [a, b], fill: css(fill) })),
      };
    }

    function build() {
      if (plot) plot.destroy();
      plot = new uPlot(options(), data, el);
    }

    const handle = {
      update(next) {
        data = next;
        if (!plot) build(); else plot.setData(data);
      },
      rebuild() { if (data) build(); },
      resize() { if (plot && el.clientWidth) plot.setSize({ width: el.clientWidth, height: plot.height }); },
    };
    charts.push(handle);
    return handle;
  }

  const fmt = (v) => (Math.abs(v) >= 100 ? Math.round(v).toLocaleString() : (Math.round(v * 10) / 10).toLocaleString());

  new ResizeObserver(() => charts.forEach((c) => c.resize())).observe(document.body);
  root.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => charts.forEach((c) => c.rebuild()));

  root.provenance = Object.assign(root.provenance || {}, { charts: { chart, fmt } });
})(window);
