// A TCP proxy in front of the database whose existing connections can be made to go
// silent: no FIN, no RST, bytes simply stop arriving. That is what a NAT or load
// balancer idle timeout, or a suspended Neon compute behind its proxy, looks like to a
// pooled connection — the case where only a bounded validation helps.
import net from 'node:net';

export interface TcpProxy {
  port: number;
  /** Existing connections stop forwarding in both directions (new ones work). */
  blackholeExisting(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }, listenHost = '127.0.0.1'): Promise<TcpProxy> {
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket; silent: boolean }>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    const pair = { client, upstream, silent: false };
    pairs.add(pair);
    client.on('data', (d) => void (pair.silent || upstream.write(d)));
    upstream.on('data', (d) => void (pair.silent || client.write(d)));
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, listenHost, r));
  return {
    port: (server.address() as net.AddressInfo).port,
    blackholeExisting: () => pairs.forEach((p) => (p.silent = true)),
    close: async () => {
      pairs.forEach((p) => {
        p.client.destroy();
        p.upstream.destroy();
      });
      await new Promise((r) => server.close(r));
    },
  };
}
