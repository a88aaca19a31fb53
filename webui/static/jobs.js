// The job page's charts, drawn with the vendored Chart.js from the data block
// the page carries. Without JavaScript the tables below them say the same.
(function () {
  "use strict";

  var source = document.getElementById("job-chart-data");
  var section = document.getElementById("job-charts");
  if (!source || !section || typeof window.Chart === "undefined") {
    return;
  }
  var data = JSON.parse(source.textContent);
  var style = window.getComputedStyle(document.documentElement);

  function colour(name) {
    return style.getPropertyValue(name).trim() || "#888";
  }

  function xy(pairs) {
    return pairs.map(function (pair) {
      return { x: pair[0], y: pair[1] };
    });
  }

  // Times in the reader's zone (the page's), as "2026-05-04 10:00".
  var zone = data.zone || "UTC";
  var clock = null;
  try {
    clock = new Intl.DateTimeFormat("sv-SE", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23"
    });
  } catch (error) {
    zone = "UTC";
  }

  function local(ms) {
    if (clock) {
      return clock.format(new Date(ms));
    }
    return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  }

  function seconds(value) {
    var whole = Math.round(value);
    if (whole < 60) {
      return whole + " s";
    }
    if (whole < 3600) {
      return Math.floor(whole / 60) + " min " + (whole % 60) + " s";
    }
    return Math.floor(whole / 3600) + " h " + Math.floor((whole % 3600) / 60) + " min";
  }

  function points(label, pairs, css) {
    return {
      type: "scatter",
      label: label,
      data: xy(pairs),
      backgroundColor: colour(css),
      borderColor: colour(css),
      pointRadius: 2,
      pointHoverRadius: 4
    };
  }

  // Only the periods with runs are sent, each with its start and end.
  var periods = data.periods;
  var first = periods.length ? periods[0].t : 0;
  var last = periods.length ? periods[periods.length - 1].end : 1;
  var shortest = Infinity;
  var longest = 0;
  periods.forEach(function (entry) {
    shortest = Math.min(shortest, entry.end - entry.t);
    longest = Math.max(longest, entry.end - entry.t);
  });
  // Lines join neighbouring periods (drawn at their middles), not across
  // periods without runs.
  var neighbours = longest * 1.5;

  // A period whose neighbours had no runs has no line: a dash marks it.
  function alone(context) {
    var data = context.dataset.data;
    var index = context.dataIndex;
    var here = data[index].x;
    var before = index > 0 && here - data[index - 1].x <= neighbours;
    var after = index < data.length - 1 && data[index + 1].x - here <= neighbours;
    return before || after ? 0 : 5;
  }

  function line(label, pairs, dash) {
    return {
      type: "line",
      label: label,
      data: xy(pairs),
      borderColor: colour("--fg"),
      borderWidth: 1,
      borderDash: dash,
      pointRadius: alone,
      pointStyle: "line",
      showLine: true,
      spanGaps: neighbours
    };
  }

  section.hidden = false;
  var Chart = window.Chart;
  var period = data.period;

  new Chart(document.getElementById("durations-chart"), {
    type: "scatter",
    data: {
      datasets: [
        points("success", data.points.success, "--ok"),
        points("failure", data.points.failure, "--bad"),
        points("other results", data.points.other, "--wait"),
        line("median per " + period, data.lines.p50, []),
        line("p90 per " + period, data.lines.p90, [6, 3]),
        line("p95 per " + period, data.lines.p95, [2, 3])
      ]
    },
    options: {
      animation: false,
      parsing: false,
      normalized: true,
      maintainAspectRatio: false,
      scales: {
        x: { type: "linear", ticks: { callback: local, maxTicksLimit: 8 } },
        y: { beginAtZero: true, ticks: { callback: seconds } }
      },
      plugins: {
        tooltip: {
          callbacks: {
            label: function (item) {
              return item.dataset.label + ": " + seconds(item.parsed.y) +
                " at " + local(item.parsed.x) + " " + zone;
            }
          }
        }
      }
    }
  });

  // Each bar over its period on a time axis: a gap between bars is a
  // stretch without runs. Periods start on the UTC clock: elsewhere a day is
  // labelled with its hour.
  function periodStart(ms) {
    return local(ms).slice(0, period === "hour" || zone !== "UTC" ? 16 : 10);
  }

  function middle(entry) {
    return (entry.t + entry.end) / 2;
  }

  // Chart.js sizes bars by the gaps between them: no wider than a period.
  var periodWidth = {
    id: "periodWidth",
    afterLayout: function (chart) {
      var dataset = chart.data.datasets[0];
      var share = shortest / Math.max(last - first, 1);
      dataset.maxBarThickness = Math.max(1, 0.9 * share * chart.chartArea.width);
    }
  };

  new Chart(document.getElementById("runs-chart"), {
    type: "bar",
    data: {
      datasets: [
        {
          label: "runs",
          data: periods.map(function (entry) {
            return { x: middle(entry), y: entry.runs };
          }),
          backgroundColor: colour("--track"),
          borderColor: colour("--wait"),
          borderWidth: 1,
          barPercentage: 0.9,
          categoryPercentage: 1,
          order: 2,
          yAxisID: "y"
        },
        {
          type: "line",
          label: "failure rate",
          data: periods.map(function (entry) {
            var rate = entry.failure_rate === null ? null : entry.failure_rate * 100;
            return { x: middle(entry), y: rate };
          }),
          borderColor: colour("--bad"),
          backgroundColor: colour("--bad"),
          pointRadius: 3,
          spanGaps: neighbours,
          // In front of the bars: a lone period's rate is a point.
          order: 1,
          yAxisID: "rate"
        }
      ]
    },
    plugins: [periodWidth],
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        x: {
          type: "linear",
          min: first,
          max: last,
          offset: false,
          ticks: { callback: periodStart, maxTicksLimit: 8 }
        },
        y: { beginAtZero: true, position: "left" },
        rate: {
          beginAtZero: true,
          max: 100,
          position: "right",
          grid: { drawOnChartArea: false },
          ticks: { callback: function (value) { return value + " %"; } }
        }
      },
      plugins: {
        legend: {
          labels: {
            sort: function (a, b) { return a.datasetIndex - b.datasetIndex; }
          }
        },
        tooltip: {
          callbacks: {
            title: function (items) {
              var entry = periods[items[0].dataIndex];
              return period + " from " + periodStart(entry.t) + " " + zone;
            },
            label: function (item) {
              var entry = periods[item.dataIndex];
              if (item.datasetIndex === 0) {
                return "runs: " + entry.runs + ", finished: " + entry.finished;
              }
              if (entry.failure_rate === null) {
                return "failure rate: none finished";
              }
              return "failure rate: " + (entry.failure_rate * 100).toFixed(1) +
                " % (" + entry.failed + " failed of " + entry.finished + " finished)";
            }
          }
        }
      }
    }
  });
})();
