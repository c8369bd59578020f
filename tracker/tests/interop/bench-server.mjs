// The npm bittorrent-tracker server (WebSocket only), for `cargo xtask bench tracker`: prints
// `listening on ws://…` once bound.
import { Server } from 'bittorrent-tracker';

const server = new Server({ udp: false, http: false, ws: true, stats: false });
server.on('error', (e) => console.error('error', e.message));
server.on('warning', () => {});
server.listen(0, '127.0.0.1', () => {
  const { port } = server.ws.address ? server.ws.address() : server.http.address();
  console.log(`listening on ws://127.0.0.1:${port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
