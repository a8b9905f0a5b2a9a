/** Starts a server listening (node:net or node:http) and resolves with the port it got. */
import type { AddressInfo, Server } from 'node:net';

export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
