// A Node service that leaks: `node --perf-basic-prof --interpreted-frames-native-stack
// leak.js PORT N [MODE]` prints "ready", and on a line opens N connections it never closes,
// then prints "done" once all are connected (or answered). The function marked `origin:MODE`
// asks for the connections (V8's perf map names a function by the line it starts on).
//
//   net   net.connect to 127.0.0.1:PORT
//   http  http.get to 127.0.0.1:PORT (an HTTP server) with a new keep-alive Agent per request,
//         never destroyed: each answered request leaves an idle socket in its Agent
//   dual  net.connect to a name that resolves to ::1 and 127.0.0.1 while PORT listens on
//         127.0.0.1 only: Node's happy eyeballs makes a new handle for the second attempt
const net = require('net');
const http = require('http');
const [port, n, mode] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4] || 'net'];
const kept = [];
function openLeakyConnection(onConnect) { // origin:net
  const s = net.connect(port, '127.0.0.1');
  s.once('connect', onConnect);
  kept.push(s);
}
function openLeakyRequest(onDone) { // origin:http
  const agent = new http.Agent({ keepAlive: true });
  kept.push(agent);
  const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
    res.resume();
    res.on('end', onDone);
  });
  req.on('error', (e) => console.error('request', e.message));
}
function dualStackLookup(host, opts, cb) {
  const addrs = [{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }];
  // Answers on a later turn of the loop, as dns.lookup does.
  setImmediate(() => (opts && opts.all ? cb(null, addrs) : cb(null, addrs[0].address, 6)));
}
function openDualStackConnection(onConnect) { // origin:dual
  const s = net.connect({ port, host: 'dualstack.test', lookup: dualStackLookup });
  s.once('connect', onConnect);
  s.on('error', (e) => console.error('connect', e.message));
  kept.push(s);
}
const open = { net: openLeakyConnection, http: openLeakyRequest, dual: openDualStackConnection }[mode];
function leakMany(count) {
  let finished = 0;
  for (let i = 0; i < count; i++) {
    open(() => {
      if (++finished === count) console.log('done');
    });
  }
}
console.log('ready');
process.stdin.once('data', () => leakMany(n));
