// Unit tests of EventStreamParser (clients/js/broker-client.js), no server needed.
//
// The parser must follow the HTML standard's "interpreting an event stream" whatever the
// chunking: the central check feeds each stream whole, then split at every character and at
// every byte (so CR, LF and CRLF, and UTF-8 sequences, fall across chunk boundaries), and
// demands the same events every time. Run: node --test tests/jsclient/node/parser.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventStreamParser } from "../../../clients/js/broker-client.js";

// Everything a parser reports, in order: ["event", type, data, id] and ["retry", ms].
function run(chunks, { end = false, initialId = "" } = {}) {
  const out = [];
  const p = new EventStreamParser(
    (ev) => out.push(["event", ev.type, ev.data, ev.lastEventId]),
    (ms) => out.push(["retry", ms]),
    initialId);
  for (const c of chunks) p.feed(c);
  if (end) p.end();
  return { out, lastEventId: p.lastEventId, parser: p };
}

// The same stream as one string, as 2 strings cut at every position, and one character at a time.
function everyTextSplit(text) {
  const ways = [[text], Array.from(text.split(""))];
  for (let i = 1; i < text.length; i++) ways.push([text.slice(0, i), text.slice(i)]);
  return ways;
}

// The same stream as UTF-8 bytes: 2 chunks cut at every byte, 3 chunks, and byte by byte.
function everyByteSplit(text) {
  const bytes = new TextEncoder().encode(text);
  const ways = [[bytes], Array.from(bytes, (b) => Uint8Array.of(b))];
  for (let i = 1; i < bytes.length; i++) {
    ways.push([bytes.slice(0, i), bytes.slice(i)]);
    const j = Math.min(bytes.length, i + 2);
    ways.push([bytes.slice(0, i), bytes.slice(i, j), bytes.slice(j)]);
  }
  return ways;
}

function assertSameForEverySplit(text, expected) {
  for (const chunks of everyTextSplit(text).concat(everyByteSplit(text))) {
    const { out } = run(chunks);
    assert.deepEqual(out, expected, "chunks: " + JSON.stringify(chunks.map((c) =>
      typeof c === "string" ? c : Array.from(c))));
  }
}

test("LF, CRLF and CR line ends, split anywhere, give the same events", () => {
  for (const nl of ["\n", "\r\n", "\r"]) {
    const text = ["retry: 3000", "", "id: 1", "event: chat", 'data: {"t":"h\u00e9 \u{1F600}"}', "",
      ": keep-alive", "", "id: 2", "event: chat", "data: two", "", ""].join(nl);
    assertSameForEverySplit(text, [
      ["retry", 3000],
      ["event", "chat", '{"t":"h\u00e9 \u{1F600}"}', "1"],
      ["event", "chat", "two", "2"],
    ]);
  }
});

test("mixed line ends in one stream", () => {
  assertSameForEverySplit("data: a\rdata: b\r\ndata: c\n\r\nevent: x\rdata: d\r\r", [
    ["event", "message", "a\nb\nc", ""],
    ["event", "x", "d", ""],
  ]);
});

test("a CR ending one chunk and an LF starting the next are one line end", () => {
  // Were the LF a line of its own, "a" would be dispatched alone before "b".
  assert.deepEqual(run(["data: a\r", "\ndata: b\r", "\n\r", "\n"]).out, [["event", "message", "a\nb", ""]]);
  // A CR then another CR is a blank line: dispatch.
  assert.deepEqual(run(["data: a\r", "\rdata: b\n\n"]).out,
    [["event", "message", "a", ""], ["event", "message", "b", ""]]);
  // The pending CR survives an empty chunk.
  assert.deepEqual(run(["data: a\r", "", "\n", "\n"]).out, [["event", "message", "a", ""]]);
});

test("multi-line data is joined with LF, and one trailing LF removed", () => {
  assertSameForEverySplit("data: first\ndata:second\ndata\ndata:  indented\n\n", [
    ["event", "message", "first\nsecond\n\n indented", ""],
  ]);
});

test("only one space after the colon is removed; a field without colon has an empty value", () => {
  assert.deepEqual(run(["event:  spaced\ndata:x\n\n"]).out, [["event", " spaced", "x", ""]]);
  assert.deepEqual(run(["data\n\n"]).out, [["event", "message", "", ""]]);
  assert.deepEqual(run(["data:\ndata:\n\n"]).out, [["event", "message", "\n", ""]]);
});

test("comments and unknown fields are ignored, comments reach onComment", () => {
  const comments = [];
  const events = [];
  const p = new EventStreamParser((ev) => events.push(ev.data), null);
  p.onComment = (c) => comments.push(c);
  p.feed(": keep-alive\n:\ndata: x\n: inside an event\nfoo: bar\nData: no\n\n");
  assert.deepEqual(events, ["x"]);
  assert.deepEqual(comments, [" keep-alive", "", " inside an event"]);
});

test("retry takes ASCII digits only", () => {
  const { out } = run(["retry: 1500\nretry: 15a\nretry: -1\nretry:\nretry: 1.5\nretry:  20\nretry:0\n\n"]);
  assert.deepEqual(out, [["retry", 1500], ["retry", 0]]);
});

test("an id containing NUL is ignored; the last id persists across events", () => {
  const { out, lastEventId } = run([
    "id: 7\ndata: a\n\n",
    "data: b\n\n",            // no id field: keeps 7
    "id: 8\u0000x\ndata: c\n\n", // NUL: ignored, still 7
    "id\ndata: d\n\n",        // an empty id resets it
  ]);
  assert.deepEqual(out, [
    ["event", "message", "a", "7"],
    ["event", "message", "b", "7"],
    ["event", "message", "c", "7"],
    ["event", "message", "d", ""],
  ]);
  assert.equal(lastEventId, "");
});

test("an event with no data is not dispatched, but its id is kept and its type dropped", () => {
  const { out, lastEventId } = run(["id: 5\nevent: ping\n\n", "data: after\n\n"]);
  assert.deepEqual(out, [["event", "message", "after", "5"]]);
  assert.equal(lastEventId, "5");
});

test("an unnamed event is a message; event names do not leak to the next event", () => {
  assert.deepEqual(run(["event: a\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n"]).out, [
    ["event", "a", "1", ""], ["event", "message", "2", ""], ["event", "message", "3", ""],
  ]);
});

test("one leading BOM is skipped, as text or split bytes; a second one is not", () => {
  assertSameForEverySplit("\uFEFFid: 1\ndata: x\n\n", [["event", "message", "x", "1"]]);
  // The second BOM makes the first field name "\uFEFFdata": unknown, ignored.
  assert.deepEqual(run(["\uFEFF\uFEFFdata: x\n\ndata: y\n\n"]).out, [["event", "message", "y", ""]]);
  // A BOM later in the stream is content.
  assert.deepEqual(run(["data: a\uFEFF\n\n"]).out, [["event", "message", "a\uFEFF", ""]]);
  // Split bytes EF | BB BF.
  assert.deepEqual(run([Uint8Array.of(0xef), Uint8Array.of(0xbb, 0xbf, 0x64), new TextEncoder().encode("ata: z\n\n")]).out,
    [["event", "message", "z", ""]]);
});

test("end of stream discards an unfinished event and keeps the last id", () => {
  const r = run(["id: 3\ndata: done\n\nid: 4\ndata: half"], { end: true });
  assert.deepEqual(r.out, [["event", "message", "done", "3"]]);
  assert.equal(r.lastEventId, "3");
  // The next stream starts clean: no leftover line or data, a BOM allowed again.
  r.parser.feed("\uFEFFdata: next\n\n");
  assert.deepEqual(r.out[1], ["event", "message", "next", "3"]);
  // Nor is a pending CR carried over: this LF is a blank line of the new stream.
  const s = run(["data: x\r"], { end: true });
  s.parser.feed("data: y\n\n");
  assert.deepEqual(s.out, [["event", "message", "y", ""]]);
});

test("a stream that ends without a blank line dispatches nothing", () => {
  assert.deepEqual(run(["data: never\n"], { end: true }).out, []);
  assert.deepEqual(run(["data: never"]).out, []);
});

test("the initial last event id is reported until the server sends one", () => {
  const r = run(["data: a\n\n"], { initialId: "41" });
  assert.deepEqual(r.out, [["event", "message", "a", "41"]]);
});

test("invalid UTF-8 becomes U+FFFD, a sequence split across chunks does not", () => {
  assert.deepEqual(run([Uint8Array.of(0x64, 0x61, 0x74, 0x61, 0x3a, 0x20, 0xff, 0x0a, 0x0a)]).out,
    [["event", "message", "\uFFFD", ""]]);
  const bytes = new TextEncoder().encode("data: \u20AC\n\n");
  assert.deepEqual(run([bytes.slice(0, 7), bytes.slice(7)]).out, [["event", "message", "\u20AC", ""]]);
});
