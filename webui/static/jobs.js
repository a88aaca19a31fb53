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

  function line(label, pairs, dash) {
    return {
      type: "line",
      label: label,
      data: xy(pairs),
      borderColor: colour("--fg"),
      borderWidth: 1,
      borderDash: dash,
      pointRadius: 0,
      showLine: true
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

  new Chart(document.getElementById("runs-chart"), {
    type: "bar",
    data: {
      // Periods start on the UTC clock: elsewhere a day is labelled with its hour.
      labels: data.periods.map(function (entry) {
        return local(entry.t).slice(0, period === "hour" || zone !== "UTC" ? 16 : 10);
      }),
      datasets: [
        {
          label: "runs",
          data: data.periods.map(function (entry) { return entry.runs; }),
          backgroundColor: colour("--track"),
          borderColor: colour("--wait"),
          borderWidth: 1,
          yAxisID: "y"
        },
        {
          type: "line",
          label: "failure rate",
          data: data.periods.map(function (entry) {
            return entry.failure_rate === null ? null : entry.failure_rate * 100;
          }),
          borderColor: colour("--bad"),
          backgroundColor: colour("--bad"),
          pointRadius: 2,
          spanGaps: true,
          yAxisID: "rate"
        }
      ]
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        y: { beginAtZero: true, position: "left" },
        rate: {
          beginAtZero: true,
          max: 100,
          position: "right",
          grid: { drawOnChartArea: false },
          ticks: { callback: function (value) { return value + " %"; } }
        }
      }
    }
  });
})();
