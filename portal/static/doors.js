// The doors board, live: follows /doors/stream (server-sent events) and updates the tables in
// place. It never moves the keyboard focus and never reloads the page; the filter applies to
// the rows already shown and to those that arrive.
(function () {
  "use strict";
  var table = document.getElementById("events");
  if (!table || !window.EventSource) return;
  var body = table.tBodies[0];
  var live = document.getElementById("live");
  var empty = document.getElementById("no-events");
  var q = document.getElementById("f-q");
  var kind = document.getElementById("f-kind");
  var door = document.getElementById("f-door");
  var MAX_ROWS = 200;

  function matches(row) {
    var text = (q && q.value || "").trim().toLowerCase();
    if (kind && kind.value && row.dataset.kind !== kind.value) return false;
    if (door && door.value && row.dataset.door !== door.value) return false;
    return !text || row.textContent.toLowerCase().indexOf(text) !== -1;
  }

  function refilter() {
    var shown = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      row.hidden = !matches(row);
      if (!row.hidden) shown += 1;
    });
    if (empty) empty.hidden = shown > 0;
  }

  function cell(row, text, cls) {
    var td = row.insertCell(-1);
    if (cls) td.className = cls;
    if (text !== null) td.textContent = text;
    return td;
  }

  function addEvent(e) {
    if (body.querySelector('tr[data-id="' + e.id + '"]')) return;
    var row = body.insertRow(0);
    row.className = "event-" + e.kind;
    row.dataset.id = e.id;
    row.dataset.kind = e.kind;
    row.dataset.door = e.door_key;
    var when = document.createElement("time");
    when.dateTime = e.iso;
    when.textContent = e.at;
    cell(row, null, "muted").appendChild(when);
    cell(row, e.door);
    var badge = document.createElement("span");
    badge.className = "state state-" + e.kind;
    badge.textContent = e.kind_label;
    cell(row, null).appendChild(badge);
    var who = cell(row, e.who);
    if (e.why) {
      var why = document.createElement("span");
      why.className = "muted";
      why.textContent = " · " + e.why;
      who.appendChild(why);
    }
    row.hidden = !matches(row);
    while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
    if (empty && !row.hidden) empty.hidden = true;
  }

  function updateController(c) {
    var row = document.querySelector('#controllers tr[data-key="' + c.key + '"]');
    if (!row) return;
    var state = row.querySelector(".c-state");
    state.className = "state state-" + c.state + " c-state";
    state.textContent = c.state_label;
    row.querySelector(".c-seen").textContent = c.last_seen;
  }

  [q, kind, door].forEach(function (input) {
    if (input) input.addEventListener("input", refilter);
  });

  var source = new EventSource("/doors/stream?after=" + encodeURIComponent(table.dataset.after || "0"));
  source.addEventListener("open", function () {
    if (live) live.textContent = live.dataset.connected;
  });
  source.addEventListener("error", function () {
    if (live) live.textContent = live.dataset.lost;
  });
  source.addEventListener("door", function (msg) {
    addEvent(JSON.parse(msg.data));
  });
  source.addEventListener("controller", function (msg) {
    updateController(JSON.parse(msg.data));
  });
})();
