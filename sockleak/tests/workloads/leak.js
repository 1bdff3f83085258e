// A Node service that leaks: `node --perf-basic-prof --interpreted-frames-native-stack
// leak.js PORT N` prints "ready", and on a line opens N connections it never closes, then
// prints "done" once all are connected.
const net = require('net');
const [port, n] = [Number(process.argv[2]), Number(process.argv[3])];
const kept = [];
function openLeakyConnection(onConnect) {
  const s = net.connect(port, '127.0.0.1');
  s.once('connect', onConnect);
  kept.push(s);
}
function leakMany(count) {
  let connected = 0;
  for (let i = 0; i < count; i++) {
    openLeakyConnection(() => {
      if (++connected === count) console.log('done');
    });
  }
}
console.log('ready');
process.stdin.once('data', () => leakMany(n));
