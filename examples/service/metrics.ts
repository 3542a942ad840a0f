// OpenTelemetry metrics for the service, scraped by Prometheus on GET /metrics.
//
// The Prometheus exporter is a MetricReader: with `preventServerStart` it opens no port
// of its own, and the service serves what it collects on its own HTTP server.

import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';

export interface ServiceMetrics {
  /** Hand this to createDb({ telemetry: { meterProvider } }). */
  meterProvider: MeterProvider;
  /** The Prometheus text exposition of every metric now. */
  scrape(): Promise<string>;
  shutdown(): Promise<void>;
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export function createMetrics(): ServiceMetrics {
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const meterProvider = new MeterProvider({ readers: [exporter] });
  const serializer = new PrometheusSerializer();
  return {
    meterProvider,
    scrape: async () => {
      const { resourceMetrics } = await exporter.collect();
      return serializer.serialize(resourceMetrics);
    },
    shutdown: () => meterProvider.shutdown(),
  };
}
