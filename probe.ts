import { loadConfig, ConfigError } from './src/index.ts';
for (const u of ['postgresql://u:hunter%00pw@db.example.com/db', 'postgresql://u@localhost/db?host=/var/run/postgresql', 'postgresql://u:pw@db.example.com/db?sslmode=', 'postgresql://u:pw@db.example.com/db?sslmode=disable&sslmode=verify-full', 'postgresql://u%00x:pw@db.example.com/db', 'postgresql://u:pw@db.example.com/d%0Ab?application_name=a%0Ab']) {
  try { const c = loadConfig({}, { DATABASE_URL: u }); console.log(u, 'OK', c.target, c.ssl.mode, JSON.stringify(c.applicationName)); } catch (e) { console.log(u, (e as ConfigError).message); }
}
