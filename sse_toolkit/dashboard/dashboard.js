// sse-toolkit hub dashboard. Plain JS, no dependencies, no build step.
//
// Every piece of text that comes from the hub, the URL or the user is put in the page with
// textContent or as an attribute value of an element made with createElement: never
// parsed as HTML.
//
// Event types: EventSource dispatches a named event ("event: update") only to listeners
// registered for that name, and a page cannot ask it which names arrive. The page listens
// to "message", "sse.reset", "sse.lagged", the demo's types (when the demo runs), the
// types listed in the "Event types" field (added live, no reconnect) and the types the
// publish form sends. Other named events are not shown.
//
// Tokens: publishing and the counters send Authorization: Bearer. EventSource cannot send a
// header, and a ?token= in its URL would be written to access logs: to subscribe, the page
// sets the hub's token cookie (path: the SSE prefix, SameSite=Strict) and clears it when the
// token field is emptied. A /?token= in the page's own URL fills the field, and is removed
// from the address bar at once (history.replaceState) so it is not bookmarked or shared.
//
// Reconnection is EventSource's own: it reconnects after the server's retry hint and sends
// Last-Event-ID itself, so missed events are replayed once. A new subscription to the same
// channels after the stream was closed passes ?last_event_id= to resume likewise.
"use strict";

(function () {
  const MAX_ROWS = 500; // ordinary event rows; notices are kept apart
  const MAX_NOTICES = 50;
  const FOLD_CHARS = 240;
  const FOLD_LINES = 8;
  const STATS_EVERY_MS = 1500;
  const NOTICES = { "sse.reset": "reset", "sse.lagged": "lagged" };

  const $ = (id) => document.getElementById(id);

  let config = null;
  let source = null;
  let sourceChannels = [];
  let listened = new Set();
  let lastId = "";
  let positions = null; // the composite id's positions after the previous event
  let attempts = 0;
  let opened = false;
  let rowCount = 0;
  let eventRows = 0;
  let noticeRows = 0;
  let statsTimer = null;
  let statsShown = "";
  let statsRefused = false; // a 401/403: polled again once the token changes
  let demoTypeChannel = {};

  // -- small DOM helpers -------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function show(node, text, kind) {
    node.textContent = text;
    node.hidden = !text;
    if (kind) {
      node.classList.remove("good", "bad");
      node.classList.add(kind);
    }
  }

  function words(text) {
    const seen = [];
    for (const word of text.split(/[\s,]+/)) {
      if (word && !seen.includes(word)) seen.push(word);
    }
    return seen;
  }

  function needsToken(action) {
    return config.token_required_for.includes(action);
  }

  function token() {
    return $("token").value.trim();
  }

  function ssePath(rest) {
    // Relative to the page, so that a hub mounted below a prefix works as well.
    return config.sse_prefix.replace(/^\/+/, "") + "/" + rest;
  }

  function cookiePath() {
    return new URL(ssePath(""), document.baseURI).pathname.replace(/\/+$/, "") || "/";
  }

  function syncTokenCookie() {
    // The token subscribing sends (EventSource sends cookies, not headers); none: cleared.
    const value = token();
    if (value && !needsToken("subscribe")) return;
    let cookie = config.token_cookie + "=" + encodeURIComponent(value) + "; path=" + cookiePath();
    cookie += "; SameSite=Strict";
    if (location.protocol === "https:") cookie += "; Secure";
    if (!value) cookie += "; Max-Age=0";
    document.cookie = cookie;
  }

  function tokenMissing() {
    const missing = needsToken("subscribe") && !token();
    show($("token-missing"), missing ? "This hub needs a token to subscribe: paste one, then Subscribe." : "");
    return missing;
  }

  function authHeaders() {
    const value = token();
    return value ? { authorization: "Bearer " + value } : {};
  }

  async function errorText(response) {
    let message = response.statusText || "error";
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") message = body.error;
    } catch (_) {
      // not JSON: keep the status text
    }
    return response.status + ": " + message;
  }

  // -- connection state --------------------------------------------------------------------

  function setState(state, detail) {
    const node = $("state");
    node.dataset.state = state;
    node.dataset.attempt = String(attempts);
    node.textContent = detail ? state + " · " + detail : state;
  }

  function setLastId(id) {
    lastId = id;
    $("last-id").textContent = id || "none";
    $("last-id").title = id || "";
  }

  // -- composite ids: which channel an event came from -------------------------------------

  function decodePositions(text) {
    // Like sse_toolkit.merge.decode_positions: "a=<pos>&b=<pos>", percent-encoded.
    if (!text || !text.includes("=")) return null;
    const result = {};
    try {
      for (const part of text.split("&")) {
        const at = part.indexOf("=");
        if (at < 0) return null;
        const name = decodeURIComponent(part.slice(0, at).replace(/\+/g, " "));
        result[name] = decodeURIComponent(part.slice(at + 1).replace(/\+/g, " "));
      }
    } catch (_) {
      return null;
    }
    return result;
  }

  function isOrigin(position) {
    // Before a channel's first event: "" (old ids), "0-0" (Redis), "<prefix>-0" (memory).
    return position === "" || position === "0-0" || /^[a-z2-7]{13}-0$/.test(position);
  }

  function channelOf(type, data, id) {
    if (NOTICES[type]) {
      try {
        const notice = JSON.parse(data);
        if (notice && typeof notice.channel === "string") return notice.channel;
      } catch (_) {
        // fall through
      }
    }
    if (sourceChannels.length === 1) return sourceChannels[0];
    const now = decodePositions(id);
    if (!now) return "?";
    const changed = Object.keys(now).filter((name) =>
      positions ? positions[name] !== now[name] : !isOrigin(now[name]),
    );
    positions = now;
    if (changed.length === 1) return changed[0];
    // The first event of a new stream, on channels that already had events: their
    // starting positions are unknown. The demo's types name their channel.
    const hinted = demoTypeChannel[type];
    if (hinted && changed.includes(hinted)) return hinted;
    return changed.length ? changed.join(" | ") : "?";
  }

  // -- events ------------------------------------------------------------------------------

  function clock(date) {
    const pad = (n, w) => String(n).padStart(w, "0");
    return (
      pad(date.getHours(), 2) + ":" + pad(date.getMinutes(), 2) + ":" +
      pad(date.getSeconds(), 2) + "." + pad(date.getMilliseconds(), 3)
    );
  }

  function dataNode(data) {
    let text = data;
    try {
      const value = JSON.parse(data);
      if (value !== null && typeof value === "object") {
        // Pretty-printed; a small value on one line (JSON escapes newlines inside strings).
        text = JSON.stringify(value, null, 2);
        if (JSON.stringify(value).length <= 72) text = JSON.stringify(value, null, 1).replace(/\n\s*/g, " ");
      }
    } catch (_) {
      // plain text
    }
    const lines = text.split("\n");
    if (text.length <= FOLD_CHARS && lines.length <= FOLD_LINES) return el("pre", "", text);
    const details = el("details");
    const head = lines[0].length > 80 ? lines[0].slice(0, 80) + "…" : lines[0];
    details.append(
      el("summary", "", head + "  (" + lines.length + " lines, " + text.length + " chars)"),
      el("pre", "", text),
    );
    return details;
  }

  function idCell(id, channel) {
    // A composite id names every channel's position: show the event's own channel's,
    // the whole id on hover.
    const decoded = decodePositions(id);
    const own = decoded && Object.prototype.hasOwnProperty.call(decoded, channel);
    const cell = el("td", "id", own ? decoded[channel] : id);
    cell.title = id;
    return cell;
  }

  function onEvent(event) {
    const id = event.lastEventId || "";
    const notice = NOTICES[event.type];
    const channel = channelOf(event.type, event.data, notice ? "" : id);
    if (!notice) setLastId(id);
    const row = el("tr", notice ? "event notice" : "event");
    row.dataset.channel = channel;
    row.dataset.event = event.type;
    row.dataset.id = notice ? "" : id;
    const type = el("td", "event");
    if (notice) type.append(el("span", "badge", notice));
    type.append(document.createTextNode(event.type));
    row.append(
      el("td", "time", clock(new Date())),
      el("td", "channel", channel),
      type,
      idCell(notice ? "" : id, channel),
    );
    const cell = el("td", "data");
    cell.append(dataNode(event.data));
    row.append(cell);
    const body = $("events");
    body.prepend(row);
    rowCount += 1;
    if (notice) noticeRows += 1;
    else eventRows += 1;
    trimRows(body);
    $("event-count").textContent =
      body.rows.length + (rowCount > body.rows.length ? " of " + rowCount : "");
    $("events-empty").hidden = true;
  }

  function trimRows(body) {
    // The oldest rows go, ordinary events and notices each beyond their own limit: a replay
    // of more than MAX_ROWS events keeps the sse.lagged notice that came before it.
    let row = body.lastElementChild;
    while (row && (eventRows > MAX_ROWS || noticeRows > MAX_NOTICES)) {
      const older = row;
      row = row.previousElementSibling;
      if (older.classList.contains("notice")) {
        if (noticeRows > MAX_NOTICES) {
          older.remove();
          noticeRows -= 1;
        }
      } else if (eventRows > MAX_ROWS) {
        older.remove();
        eventRows -= 1;
      }
    }
  }

  function listen(type) {
    if (!type || listened.has(type)) return;
    listened.add(type);
    if (source) source.addEventListener(type, onEvent);
  }

  function wantedTypes() {
    const types = ["message", ...Object.keys(NOTICES)];
    for (const item of config.demo_channels) types.push(item.event);
    types.push(...words($("event-types").value));
    return types;
  }

  // -- subscribe ---------------------------------------------------------------------------

  function streamUrl(channels, resumeFrom) {
    const query = new URLSearchParams();
    for (const name of channels) query.append("channel", name);
    if (resumeFrom) query.set("last_event_id", resumeFrom);
    return ssePath("?" + query.toString());
  }

  function closeSource() {
    if (source) source.close();
    source = null;
    $("disconnect").disabled = true;
  }

  function subscribe() {
    const channels = words($("channels").value);
    show($("subscribe-error"), "");
    if (!channels.length) {
      show($("subscribe-error"), "Name at least one channel.");
      return;
    }
    const same =
      channels.length === sourceChannels.length && channels.every((c) => sourceChannels.includes(c));
    const resumeFrom = same && !source ? lastId : "";
    closeSource();
    if (!same) {
      positions = null;
      setLastId("");
    }
    sourceChannels = channels;
    attempts = 0;
    opened = false;
    syncTokenCookie();
    howTo();
    const url = streamUrl(channels, resumeFrom);
    const current = new EventSource(url);
    source = current;
    listened = new Set();
    for (const type of wantedTypes()) listen(type);
    setState("connecting");
    $("disconnect").disabled = false;
    current.addEventListener("open", () => {
      if (source !== current) return;
      attempts = 0;
      opened = true;
      show($("subscribe-error"), "");
      setState("open", channels.join(", "));
      refreshStats();
    });
    current.addEventListener("error", () => {
      if (source !== current) return;
      if (current.readyState === EventSource.CONNECTING) {
        attempts += 1;
        setState("reconnecting", "attempt " + attempts);
      } else {
        setState("closed");
        source = null;
        $("disconnect").disabled = true;
        diagnose(url, opened);
      }
    });
    markChips();
  }

  async function diagnose(url, wasOpen) {
    // EventSource gives up on an error status without saying which: ask once more.
    const controller = new AbortController();
    try {
      const response = await fetch(url, { signal: controller.signal, cache: "no-store" });
      if (response.ok) {
        controller.abort();
        show($("subscribe-error"), wasOpen ? "The stream was closed." : "The stream closed at once.");
      } else {
        show($("subscribe-error"), await errorText(response));
      }
    } catch (_) {
      if (!controller.signal.aborted) show($("subscribe-error"), "The hub cannot be reached.");
    }
  }

  function disconnect() {
    closeSource();
    setState("closed", "by you");
  }

  // -- publish -----------------------------------------------------------------------------

  async function publish() {
    const result = $("publish-result");
    const channel = $("pub-channel").value.trim();
    const type = $("pub-event").value.trim();
    const id = $("pub-id").value;
    const text = $("pub-data").value;
    if (!channel) {
      show(result, "Name a channel.", "bad");
      return;
    }
    let data = text;
    if ($("pub-format").value === "json") {
      try {
        data = JSON.parse(text);
      } catch (error) {
        show(result, "Not sent: the data is not JSON (" + error.message + ")", "bad");
        return;
      }
    }
    const body = { data: data };
    if (type) body.event = type;
    if (id) body.id = id;
    if (type) listen(type); // so that this page shows what it publishes
    $("publish").disabled = true;
    try {
      const response = await fetch(ssePath(encodeURIComponent(channel)), {
        method: "POST",
        headers: Object.assign({ "content-type": "application/json" }, authHeaders()),
        body: JSON.stringify(body),
        cache: "no-store",
      });
      if (response.ok) {
        const answer = await response.json();
        show(result, "Published on " + channel + " with id " + answer.id, "good");
        refreshStats();
      } else {
        show(result, await errorText(response), "bad");
      }
    } catch (_) {
      show(result, "The hub cannot be reached.", "bad");
    } finally {
      $("publish").disabled = false;
    }
  }

  // -- stats -------------------------------------------------------------------------------

  async function pollStats() {
    if (document.hidden || statsRefused) return;
    const asked = token();
    try {
      const response = await fetch(ssePath("_stats"), { headers: authHeaders(), cache: "no-store" });
      if (asked !== token()) return; // the token changed meanwhile: its own poll answers
      if (!response.ok) {
        if (response.status === 401 || response.status === 403) {
          // Refused with this token: asking every 1.5 s changes nothing (and logs an error
          // each time). Asked again when the token field changes.
          statsRefused = true;
          stopStats();
        }
        show($("stats-error"), await errorText(response));
        return;
      }
      show($("stats-error"), "");
      renderStats(await response.json());
    } catch (_) {
      show($("stats-error"), "The hub cannot be reached.");
    }
  }

  function renderStats(stats) {
    const shown = JSON.stringify(stats);
    if (shown === statsShown) return;
    statsShown = shown;
    const perChannel = stats.per_channel || {};
    const names = Object.keys(perChannel).sort();
    const body = $("stats-body");
    body.replaceChildren();
    for (const name of names) {
      const item = perChannel[name];
      const row = el("tr");
      row.dataset.channel = name;
      row.append(
        el("td", "", name),
        el("td", "", item.subscribers),
        el("td", "", item.published),
        el("td", "", item.dropped),
      );
      body.append(row);
    }
    $("stats-totals").textContent =
      names.length + " channels · " + stats.subscribers + " subscribers · " + stats.published + " published";
    const chips = $("known-channels");
    chips.replaceChildren();
    for (const name of names) {
      const chip = el("button", "chip", name);
      chip.type = "button";
      chip.dataset.channel = name;
      chip.title = "add or remove " + name;
      chip.addEventListener("click", () => toggleChannel(name));
      chips.append(chip);
    }
    markChips();
  }

  function toggleChannel(name) {
    const channels = words($("channels").value);
    const at = channels.indexOf(name);
    if (at >= 0) channels.splice(at, 1);
    else channels.push(name);
    $("channels").value = channels.join(" ");
    markChips();
  }

  function markChips() {
    const chosen = words($("channels").value);
    for (const chip of $("known-channels").children) {
      chip.classList.toggle("on", chosen.includes(chip.dataset.channel));
    }
  }

  function refreshStats() {
    if (config.stats) pollStats();
  }

  function startStats() {
    if (statsTimer !== null || document.hidden || statsRefused) return;
    pollStats();
    statsTimer = setInterval(pollStats, STATS_EVERY_MS);
  }

  function stopStats() {
    if (statsTimer !== null) clearInterval(statsTimer);
    statsTimer = null;
  }

  // -- how-to: the curl lines that match how the hub was started ---------------------------

  function shellWord(word) {
    // Channel names and URLs are mostly shell-safe; anything else in single quotes.
    return /^[A-Za-z0-9._:\/=@%+,-]+$/.test(word) ? word : "'" + word.replace(/'/g, "'\\''") + "'";
  }

  function howToChannel() {
    // Where the page listens: a newcomer who follows the lines sees their event here.
    if (sourceChannels.length) return sourceChannels[0];
    return config.demo_channels.length ? config.demo_channels[0].channel : "demo";
  }

  function howTo() {
    const base = new URL(config.sse_prefix.replace(/^\/+/, ""), document.baseURI).href.replace(
      /\/$/,
      "",
    );
    const bearer = ' -H "authorization: Bearer $TOKEN"';
    const channel = howToChannel();
    const other = channel === "other" ? "more" : "other";
    // One token per purpose, granting that action only (stats needs no channel).
    const mint = (action, channels) =>
      "TOKEN=$(python -m sse_toolkit token --secret ..." +
      channels.map((name) => " --channel " + shellWord(name)).join("") +
      " --action " + action + ")";
    const lines = [];
    if (config.token_required_for.length) {
      lines.push([
        "Each TOKEN= line mints a token with the hub's --secret (--private-key for a hub " +
          "run with --jwt-key) for the curl line after it",
        null,
      ]);
    }
    const subAuth = needsToken("subscribe") ? bearer : "";
    const subscribe = ["curl -N" + subAuth + " " + shellWord(base + "/" + channel)];
    if (subAuth) subscribe.unshift(mint("subscribe", [channel, other]));
    lines.push(["Subscribe", subscribe.join("\n")]);
    lines.push([
      "Several channels on one stream" + (subAuth ? " (the same token)" : ""),
      "curl -N" + subAuth + " " + shellWord(base + "/?channel=" + channel + "&channel=" + other),
    ]);
    if (config.allow_publish) {
      const pubAuth = needsToken("publish") ? bearer : "";
      const publish = [
        "curl -X POST -H 'content-type: application/json'" + pubAuth +
          " -d '{\"data\": {\"hello\": \"world\"}}' " + shellWord(base + "/" + channel),
      ];
      if (pubAuth) publish.unshift(mint("publish", [channel]));
      lines.push(["Publish (shown here: the page listens to " + channel + ")", publish.join("\n")]);
    }
    if (config.stats) {
      const statsAuth = needsToken("stats") ? bearer : "";
      const counters = ["curl" + statsAuth + " " + shellWord(base + "/_stats")];
      if (statsAuth) counters.unshift(mint("stats", []));
      lines.push(["Counters", counters.join("\n")]);
    }
    const box = $("howto");
    box.replaceChildren();
    for (const [label, command] of lines) {
      box.append(el("p", "", label));
      if (command !== null) box.append(el("pre", "", command));
    }
    if (!config.allow_publish) {
      box.append(el("p", "", "Publishing over HTTP is off (--allow-publish turns it on)."));
    }
  }

  // -- start -------------------------------------------------------------------------------

  function setUp(givenToken) {
    for (const item of config.demo_channels) demoTypeChannel[item.event] = item.channel;
    const needed = config.token_required_for;
    if (needed.length) {
      $("token-panel").hidden = false;
      $("token-needs").textContent = "(needed to " + needed.join(", ") + ")";
      $("token-hint").textContent =
        "Sent as Authorization: Bearer to publish and read counters; to subscribe, as the " +
        config.token_cookie + " cookie (EventSource sends no header; a ?token= would be " +
        "written to access logs).";
    }
    $("token").value = givenToken;
    syncTokenCookie(); // the field is the truth: an earlier visit's cookie goes
    tokenMissing();
    $("publish-panel").hidden = !config.allow_publish;
    $("stats-panel").hidden = !config.stats;
    howTo();

    $("subscribe-form").addEventListener("submit", (event) => {
      event.preventDefault();
      subscribe();
    });
    $("disconnect").addEventListener("click", disconnect);
    $("publish-form").addEventListener("submit", (event) => {
      event.preventDefault();
      publish();
    });
    $("event-types").addEventListener("input", () => {
      for (const type of words($("event-types").value)) listen(type);
    });
    $("channels").addEventListener("input", markChips);
    $("token").addEventListener("input", () => {
      syncTokenCookie();
      tokenMissing();
      if (config.stats) {
        statsRefused = false;
        stopStats();
        startStats();
      }
    });
    $("clear").addEventListener("click", () => {
      $("events").replaceChildren();
      rowCount = 0;
      eventRows = 0;
      noticeRows = 0;
      $("event-count").textContent = "0";
      $("events-empty").hidden = false;
    });
    if (config.stats) {
      document.addEventListener("visibilitychange", () => {
        if (document.hidden) stopStats();
        else startStats();
      });
      startStats();
    }

    // /?channel=a&channel=b&event=update opens subscribed; the demo opens on its channels.
    const query = new URLSearchParams(location.search);
    let channels = query.getAll("channel");
    if (!channels.length && config.demo) channels = config.demo_channels.map((c) => c.channel);
    $("event-types").value = query.getAll("event").join(" ");
    if (config.allow_publish) {
      $("pub-channel").value = channels[0] || "demo";
    }
    if (channels.length) {
      $("channels").value = channels.join(" ");
      // Subscribing needs a token and none was given: no 401 at once, the hint says why.
      if (tokenMissing()) setState("closed", "needs a token");
      else subscribe();
    }
  }

  function takeTokenFromUrl() {
    // /?token=... fills the token field; the address bar keeps everything else.
    const query = new URLSearchParams(location.search);
    if (!query.has("token")) return "";
    const given = query.get("token").trim();
    query.delete("token");
    const rest = query.toString();
    history.replaceState(history.state, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    return given;
  }

  async function start() {
    const givenToken = takeTokenFromUrl();
    try {
      const response = await fetch("_hub/config.json", { cache: "no-store" });
      if (!response.ok) throw new Error(await errorText(response));
      config = await response.json();
    } catch (error) {
      show($("subscribe-error"), "Cannot read the hub's settings: " + error.message);
      return;
    }
    setUp(givenToken);
  }

  start();
})();
