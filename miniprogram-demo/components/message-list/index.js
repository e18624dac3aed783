// components/message-list: the live message list. The page hands it raw entries; the component
// formats them (WXML cannot call functions) and shows the newest first.
//
//   <message-list items="{{log}}" empty-text="Nothing yet" />
//
// An entry is { id, at (ms), kind, frame?, text? }:
//   kind 'push'          frame = a push the client delivered   -> "push  u:u1 #3"  + its data
//   kind 'in' | 'out'    frame = a frame received / sent       -> "in  reply #5"   + its data
//   kind 'state' | 'error' | 'note'   text = what happened

const MAX_BODY = 300;

function pad(n) {
  return n < 10 ? '0' + n : String(n);
}

function clock(ms) {
  const d = new Date(ms);
  return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
}

function json(value) {
  const text = value === undefined ? '' : JSON.stringify(value);
  return text.length > MAX_BODY ? text.slice(0, MAX_BODY) + '…' : text;
}

/** The title and body of a frame: its type and reference, then its payload. */
function describeFrame(f) {
  if (f.type === 'push') return { title: f.stream + (f.seq == null ? '' : ' #' + f.seq), body: json(f.data) };
  if (f.type === 'reply') return { title: 'reply' + (f.ref ? ' to #' + f.ref : ''), body: json(f.data) };
  if (f.type === 'error') return { title: 'error ' + f.code + (f.ref ? ' to #' + f.ref : ''), body: f.message };
  if (f.type === 'welcome') return { title: 'welcome ' + f.conn, body: 'uid ' + (f.uid || 'anonymous') + ', epoch ' + f.epoch };
  const rest = Object.assign({}, f);
  delete rest.type;
  delete rest.id;
  return { title: f.type + (f.id ? ' #' + f.id : ''), body: json(rest) };
}

function toRow(item) {
  const described = item.frame ? describeFrame(item.frame) : { title: item.text || '', body: '' };
  return {
    id: item.id,
    kind: item.kind,
    title: described.title,
    body: described.body,
    time: clock(item.at),
  };
}

Component({
  properties: {
    items: { type: Array, value: [] },
    emptyText: { type: String, value: 'No messages yet' },
  },
  data: {
    rows: [],
  },
  observers: {
    items(items) {
      this.setData({ rows: items.map(toRow).reverse() });
    },
  },
});
