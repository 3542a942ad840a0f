import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, DEFAULTS, loadConfig } from '../src/index';
import { loadReplicaConfig } from '../src/config';

const SECRET = 'S3cr3t-p@ss';
const URL_WITH_SECRET = `postgresql://app:${encodeURIComponent(SECRET)}@db.example.com:5432/shop`;

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const c = loadConfig({}, { DATABASE_URL: URL_WITH_SECRET });
    expect(c.target).toEqual({ host: 'db.example.com', port: 5432, user: 'app', database: 'shop' });
    // Hidden from printing and serialising, still there for code.
    expect(c.target.password).toBe(SECRET);
    expect(JSON.stringify(c)).not.toContain(SECRET);
    expect(c.driver).toBe('pg');
    expect(c.mode).toBe('pooled');
    expect(c.pool).toEqual({
      size: DEFAULTS.poolSize,
      maxOverflow: DEFAULTS.maxOverflow,
      timeoutMs: DEFAULTS.poolTimeoutMs,
      recycleMs: DEFAULTS.recycleMs,
      overflowIdleMs: DEFAULTS.overflowIdleMs,
      validateAfterIdleMs: DEFAULTS.validateAfterIdleMs,
    });
    // A remote host defaults to encrypted; a local one to libpq's prefer.
    expect(c.ssl.mode).toBe('require');
    expect(loadConfig({}, { DATABASE_URL: 'postgresql://u:p@localhost/db' }).ssl.mode).toBe('prefer');
  });

  it('reads a managed timeout in the URL options whatever its case (PostgreSQL folds setting names); explicit options still win', () => {
    const url = `${URL_WITH_SECRET}?options=${encodeURIComponent('-c STATEMENT_TIMEOUT=0 --Lock-Timeout=2s -c Search_Path=app')}`;
    const fromUrl = loadConfig({}, { DATABASE_URL: url });
    expect(fromUrl.timeouts).toMatchObject({ statementMs: 0, lockMs: 2000 });
    expect(fromUrl.serverOptions).toBe('-c search_path=app');
    // Before: the layer kept its 1 s (and its client deadline) while the upper-case setting,
    // passed through after it, turned the server's statement timeout off.
    const explicit = loadConfig({ timeouts: { statementMs: 1000 } }, { DATABASE_URL: url });
    expect(explicit.timeouts.statementMs).toBe(1000);
    expect(explicit.serverOptions).not.toMatch(/statement_timeout/i);
  });

  it('takes explicit options over DB_* variables over URL parameters', () => {
    const env = {
      DATABASE_URL: `${URL_WITH_SECRET}?sslmode=verify-full&connect_timeout=3&application_name=from-url&pool_timeout=7`,
      DB_SSLMODE: 'require',
      DB_APPLICATION_NAME: 'from-env',
      DB_POOL_TIMEOUT: '9',
    };
    const fromEnv = loadConfig({}, env);
    expect(fromEnv.ssl.mode).toBe('require');
    expect(fromEnv.applicationName).toBe('from-env');
    expect(fromEnv.pool.timeoutMs).toBe(9000);
    expect(fromEnv.timeouts.connectMs).toBe(3000);

    const explicit = loadConfig({ ssl: { mode: 'disable' }, applicationName: 'explicit', pool: { timeoutMs: 1234 } }, env);
    expect(explicit.ssl.mode).toBe('disable');
    expect(explicit.applicationName).toBe('explicit');
    expect(explicit.pool.timeoutMs).toBe(1234);
  });

  it('builds the target from DB_HOST / DB_PORT / ... when there is no DATABASE_URL', () => {
    const c = loadConfig({}, { DB_HOST: '10.1.2.3', DB_PORT: '6543', DB_USER: 'svc', DB_PASSWORD: SECRET, DB_NAME: 'orders' });
    expect(c.target).toEqual({ host: '10.1.2.3', port: 6543, user: 'svc', database: 'orders' });
    expect(c.target.password).toBe(SECRET);
  });

  it('reads the URL parameters people already use', () => {
    const c = loadConfig(
      {},
      {
        DATABASE_URL: `${URL_WITH_SECRET}?connection_limit=4&pool_timeout=2&connect_timeout=5&options=${encodeURIComponent('-c statement_timeout=5s -c lock_timeout=250 -c search_path=app')}`,
      },
    );
    // connection_limit is Prisma's hard cap: no overflow on top of it.
    expect(c.pool.size).toBe(4);
    expect(c.pool.maxOverflow).toBe(0);
    expect(c.pool.timeoutMs).toBe(2000);
    expect(c.timeouts.connectMs).toBe(5000);
    expect(c.timeouts.statementMs).toBe(5000);
    expect(c.timeouts.lockMs).toBe(250);
    expect(c.serverOptions).toBe('-c search_path=app');
  });

  it("reads Prisma's ?schema= (the models' schema), and refuses a name Prisma would put into its SQL unquoted", () => {
    expect(loadConfig({}, { DATABASE_URL: URL_WITH_SECRET }).schema).toBeUndefined();
    expect(loadConfig({}, { DATABASE_URL: `${URL_WITH_SECRET}?schema=billing` }).schema).toBe('billing');
    expect(loadConfig({ schema: 'audit' }, { DATABASE_URL: `${URL_WITH_SECRET}?schema=billing` }).schema).toBe('audit');
    const err = configError(() => loadConfig({}, { DATABASE_URL: `${URL_WITH_SECRET}?schema=${encodeURIComponent('x"."users" --')}` }));
    expect(err.issues).toEqual([{ setting: 'DATABASE_URL parameter schema', problem: expect.stringContaining('must not contain a double quote') }]);
    expect(configError(() => loadConfig({ schema: 's'.repeat(64) }, { DATABASE_URL: URL_WITH_SECRET })).issues[0]).toMatchObject({ setting: 'schema' });
  });

  it("behind a transaction pooler, a session setting in the URL's options is refused instead of silently dropped", () => {
    const withPath = `${URL_WITH_SECRET}?options=${encodeURIComponent('-c search_path=app -c statement_timeout=5s')}`;
    for (const [options, env] of [[{}, { DATABASE_URL: `${withPath}&pgbouncer=true` }], [{ pooler: true }, { DATABASE_URL: withPath }]] as const) {
      const err = configError(() => loadConfig(options, env));
      expect(err.issues).toEqual([{ setting: 'DATABASE_URL parameter options', problem: expect.stringMatching(/^sets search_path, which cannot reach the server through a transaction-mode pooler.*ALTER ROLE \.\.\. SET search_path/) }]);
      expect(err.message).not.toContain(SECRET);
    }
    // The timeouts it manages are set per unit of work there; Neon's endpoint hint is the proxy's.
    expect(loadConfig({}, { DATABASE_URL: `${URL_WITH_SECRET}?pgbouncer=true&options=${encodeURIComponent('-c statement_timeout=5s endpoint=ep-x')}` }).timeouts.statementMs).toBe(5000);
  });

  it("checks DIRECT_URL's own parameters at startup, as migrate reads them, naming DIRECT_URL (never its password)", () => {
    const direct = `postgresql://migrator:${encodeURIComponent(SECRET)}@db.example.com/shop`;
    const err = configError(() => loadConfig({}, { DATABASE_URL: URL_WITH_SECRET, DIRECT_URL: `${direct}?sslmode=verify_full&connect_timeout=5s` }));
    expect(err.issues.map((i) => i.setting).sort()).toEqual(['DIRECT_URL parameter connect_timeout', 'DIRECT_URL parameter sslmode']);
    expect(err.message).not.toContain(SECRET);
    expect(configError(() => loadConfig({ directUrl: `${direct}?sslmode=bogus` }, { DATABASE_URL: URL_WITH_SECRET })).issues).toEqual([
      { setting: 'directUrl parameter sslmode', problem: expect.stringMatching(/^must be one of disable/) },
    ]);
    expect(loadConfig({}, { DATABASE_URL: URL_WITH_SECRET, DIRECT_URL: `${direct}?sslmode=verify-full&connect_timeout=5` }).directUrl).toContain('migrator');
  });

  it('chooses the neon driver for *.neon.tech and the pooler for -pooler hosts', () => {
    const c = loadConfig({}, { DATABASE_URL: 'postgresql://u:p@ep-cool-1234-pooler.eu-central-1.aws.neon.tech/neondb' });
    expect(c.driver).toBe('neon');
    expect(c.pooler).toBe(true);
    expect(loadConfig({ driver: 'pg' }, { DATABASE_URL: 'postgresql://u:p@ep-x.neon.tech/db' }).driver).toBe('pg');
    expect(loadConfig({}, { DATABASE_URL: 'postgresql://u:p@h/db?pgbouncer=true' }).pooler).toBe(true);
  });

  it('switches to the no-pool mode on serverless platforms unless told otherwise', () => {
    expect(loadConfig({}, { DATABASE_URL: URL_WITH_SECRET, VERCEL: '1' }).mode).toBe('serverless');
    expect(loadConfig({}, { DATABASE_URL: URL_WITH_SECRET, AWS_LAMBDA_FUNCTION_NAME: 'fn' }).mode).toBe('serverless');
    expect(loadConfig({ mode: 'pooled' }, { DATABASE_URL: URL_WITH_SECRET, NETLIFY: 'true' }).mode).toBe('pooled');
  });

  it('treats DB_POOL_RECYCLE=-1 (SQLAlchemy for never) as no limit', () => {
    expect(loadConfig({}, { DATABASE_URL: URL_WITH_SECRET, DB_POOL_RECYCLE: '-1' }).pool.recycleMs).toBe(0);
  });

  describe('bad input gives one ConfigError naming the setting, never the password', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cfg-'));
    const realCert = path.join(dir, 'ca.crt');
    writeFileSync(realCert, '-----BEGIN CERTIFICATE-----\nnot parsed by loadConfig\n-----END CERTIFICATE-----\n');

    const cases: Array<[string, Record<string, string | undefined>, string]> = [
      ['malformed URL', { DATABASE_URL: `postgresql://app:${SECRET}@` + 'bad host:xx/db' }, 'DATABASE_URL'],
      ['wrong scheme', { DATABASE_URL: `mysql://app:${SECRET}@h/db` }, 'DATABASE_URL'],
      ['no URL at all', {}, 'DATABASE_URL'],
      ['unknown sslmode', { DATABASE_URL: URL_WITH_SECRET, DB_SSLMODE: 'required' }, 'DB_SSLMODE'],
      ['unknown sslmode in the URL', { DATABASE_URL: `${URL_WITH_SECRET}?sslmode=on` }, 'DATABASE_URL parameter sslmode'],
      ['non-numeric pool size', { DATABASE_URL: URL_WITH_SECRET, DB_POOL_SIZE: 'abc' }, 'DB_POOL_SIZE'],
      ['negative pool size', { DATABASE_URL: URL_WITH_SECRET, DB_POOL_SIZE: '-3' }, 'DB_POOL_SIZE'],
      ['zero pool size', { DATABASE_URL: URL_WITH_SECRET, DB_POOL_SIZE: '0' }, 'DB_POOL_SIZE'],
      ['fractional overflow', { DATABASE_URL: URL_WITH_SECRET, DB_MAX_OVERFLOW: '1.5' }, 'DB_MAX_OVERFLOW'],
      ['bad statement timeout', { DATABASE_URL: URL_WITH_SECRET, DB_STATEMENT_TIMEOUT: 'soon' }, 'DB_STATEMENT_TIMEOUT'],
      ['port out of range', { DB_HOST: 'h', DB_PORT: '70000', DB_PASSWORD: SECRET }, 'DB_PORT'],
      ['missing CA file', { DATABASE_URL: URL_WITH_SECRET, DB_SSLROOTCERT: path.join(dir, 'missing.crt') }, 'DB_SSLROOTCERT'],
      ['cert without key', { DATABASE_URL: URL_WITH_SECRET, DB_SSLCERT: realCert }, 'DB_SSLKEY'],
      ['plaintext to a remote host in production', { DATABASE_URL: URL_WITH_SECRET, DB_SSLMODE: 'disable', NODE_ENV: 'production' }, 'DB_SSLMODE'],
      ['unknown driver', { DATABASE_URL: URL_WITH_SECRET, DB_DRIVER: 'mysql' }, 'DB_DRIVER'],
      ['bad boolean', { DATABASE_URL: URL_WITH_SECRET, DB_SSL_ALLOW_INSECURE: 'maybe' }, 'DB_SSL_ALLOW_INSECURE'],
      // A space or @ in a host breaks the connection string built from it, and the driver's error then quotes it whole.
      ['a space inside the host', { DB_HOST: 'ep-quiet sun.us-east-2.aws.neon.tech', DB_PASSWORD: SECRET }, 'DB_HOST'],
      ['an @ in the host', { DB_HOST: 'evil@ep-x.neon.tech', DB_PASSWORD: SECRET }, 'DB_HOST'],
      ['a path after the host', { DB_HOST: 'db.example.com/other', DB_PASSWORD: SECRET }, 'DB_HOST'],
      ['a port inside the host', { DB_HOST: 'ep-x.us-east-2.aws.neon.tech:5432', DB_PASSWORD: SECRET }, 'DB_HOST'],
    ];

    it('a host with a space given as an option is refused naming `host`; a unix socket directory may hold one', () => {
      const err = configError(() => loadConfig({ host: 'ep-quiet sun.us-east-2.aws.neon.tech', password: SECRET, mode: 'serverless', driver: 'neon' }, {}));
      expect(err.issues.map((i) => i.setting)).toEqual(['host']);
      expect(err.message).not.toContain(SECRET);
      expect(loadConfig({ host: '/var/run/my sockets', password: SECRET }, {}).target.host).toBe('/var/run/my sockets');
      expect(loadConfig({}, { DATABASE_URL: 'postgresql://u:p@[::1]:5432/db' }).target.host).toBe('::1');
      expect(loadConfig({ host: 'fe80::1' }, {}).target.host).toBe('fe80::1');
    });

    it.each(cases)('%s', (_name, env, setting) => {
      const err = configError(() => loadConfig({}, env));
      expect(err.issues.map((i) => i.setting)).toContain(setting);
      expect(err.message).toContain(setting);
      expect(err.message).not.toContain(SECRET);
      expect(err.message).not.toContain(encodeURIComponent(SECRET));
    });

    it('a password that cannot be used is refused without printing it, wherever it came from', () => {
      const bad = 'hunter\u0000pw';
      for (const [options, env] of [[{}, { DATABASE_URL: `postgresql://app:${encodeURIComponent(bad)}@db.example.com/shop` }], [{}, { DB_HOST: 'h', DB_PASSWORD: bad }], [{ host: 'h', password: bad }, {}]] as const) {
        const err = configError(() => loadConfig(options, env));
        expect(err.issues[0]!.problem).toMatch(/must not contain a NUL byte/);
        // Before: the URL's password was quoted (got "hunter\u0000pw").
        expect(`${err.message} ${JSON.stringify(err.issues)}`).not.toMatch(/hunter/);
      }
    });

    it('lists every problem at once', () => {
      const err = configError(() =>
        loadConfig({}, { DATABASE_URL: URL_WITH_SECRET, DB_POOL_SIZE: 'abc', DB_SSLMODE: 'nope', DB_POOL_TIMEOUT: '-1' }),
      );
      expect(err.issues.map((i) => i.setting).sort()).toEqual(['DB_POOL_SIZE', 'DB_POOL_TIMEOUT', 'DB_SSLMODE']);
    });

    it('allows plaintext in production only when told to, and always for local hosts', () => {
      expect(
        loadConfig({}, { DATABASE_URL: URL_WITH_SECRET, DB_SSLMODE: 'disable', NODE_ENV: 'production', DB_SSL_ALLOW_INSECURE: 'true' }).ssl.mode,
      ).toBe('disable');
      expect(loadConfig({}, { DATABASE_URL: 'postgresql://u:p@127.0.0.1/db', DB_SSLMODE: 'disable', NODE_ENV: 'production' }).ssl.mode).toBe(
        'disable',
      );
    });
  });
});

describe('URL query parameters', () => {
  const issuesOf = (env: Record<string, string>, options = {}): Array<{ setting: string; problem: string }> => [...configError(() => loadConfig(options, env)).issues];

  it('an unknown or misspelt parameter is refused, naming it, where it came from and the one meant, instead of leaving a weaker default in force', () => {
    // Before: ignored, and sslmode stayed the default (require: not verified).
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?sslmdoe=verify-full` })).toEqual([
      { setting: 'DATABASE_URL parameter sslmdoe', problem: expect.stringMatching(/^is not a connection parameter.*did you mean sslmode\?$/) },
    ]);
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?SSLMode=verify-full` })[0]!.problem).toMatch(/did you mean sslmode\?/);
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?connection_limt=3` })[0]!.problem).toMatch(/did you mean connection_limit\?/);
    // node-postgres reads ?statement_timeout= from a URL; here it is told where the setting goes.
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?statement_timeout=5000` })[0]!.problem).toMatch(/options=-c statement_timeout=.*DB_STATEMENT_TIMEOUT/);
    // Names of Object's own properties are parameters like any other.
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?constructor=1&__proto__=x&toString=y` }).map((i) => i.setting)).toEqual(['constructor', '__proto__', 'toString'].map((n) => `DATABASE_URL parameter ${n}`));
    // Nothing close: no guess.
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?supa=base-pooler.x` })).toEqual([{ setting: 'DATABASE_URL parameter supa', problem: expect.not.stringContaining('did you mean') }]);
    expect(issuesOf({ DATABASE_URL: URL_WITH_SECRET, DIRECT_URL: `${URL_WITH_SECRET}?sslmdoe=verify-full` })[0]!.setting).toBe('DIRECT_URL parameter sslmdoe');
    expect(issuesOf({}, { url: `${URL_WITH_SECRET}?sslmdoe=verify-full` })[0]!.setting).toBe('url parameter sslmdoe');
    const replica = (options: object): unknown => {
      try {
        return loadReplicaConfig(options, {}, 'postgresql://r:pw@replica.example.com/app?sslmdoe=verify-full', 1);
      } catch (err) {
        return (err as ConfigError).issues;
      }
    };
    expect(replica({})).toEqual([expect.objectContaining({ setting: 'DATABASE_REPLICA_URL[1] parameter sslmdoe' })]);
    expect(replica({ replicas: [] })).toEqual([expect.objectContaining({ setting: 'replicas[1] parameter sslmdoe' })]);
  });

  it("reads or maps Prisma's parameters, and refuses with a reason the ones it cannot honour", () => {
    const read = (query: string) => loadConfig({}, { DATABASE_URL: `${URL_WITH_SECRET}?${query}` });
    expect(read('max_connection_lifetime=60').pool.recycleMs).toBe(60_000);
    expect(read('statement_cache_size=0&pgbouncer=true&schema=app&application_name=shop').pool).toBeDefined();
    // sslaccept=strict: the certificate and host name are checked (verify-full); contradicting sslmodes are refused.
    expect(read('sslaccept=strict').ssl.mode).toBe('verify-full');
    expect(read('sslaccept=accept_invalid_certs&sslmode=require').ssl.mode).toBe('require');
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?sslaccept=strict&sslmode=require` })).toEqual([{ setting: 'DATABASE_URL parameter sslaccept', problem: expect.stringContaining('sslmode=require from DATABASE_URL parameter sslmode does not check it') }]);
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?sslaccept=accept_invalid_certs`, DB_SSLMODE: 'verify-full' })[0]!.problem).toContain('from DB_SSLMODE checks the certificate');
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?sslaccept=sometimes` })[0]!.problem).toMatch(/^must be strict or accept_invalid_certs/);
    const refused = issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?sslidentity=id.p12&sslpassword=${SECRET}&max_idle_connection_lifetime=60&target_session_attrs=read-write&ssl=true` });
    expect(refused.map((i) => i.setting)).toEqual(['sslidentity', 'sslpassword', 'max_idle_connection_lifetime', 'target_session_attrs', 'ssl'].map((n) => `DATABASE_URL parameter ${n}`));
    expect(refused[0]!.problem).toMatch(/PKCS#12.*sslcert and sslkey/);
    expect(JSON.stringify(refused)).not.toContain(SECRET);
    // socket_timeout bounds migration statements: read in DIRECT_URL, refused (with where to put it) for the application.
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?socket_timeout=5` })[0]!.problem).toMatch(/only migrations read.*DIRECT_URL.*statementMs/);
    expect(loadConfig({}, { DATABASE_URL: URL_WITH_SECRET, DIRECT_URL: `${URL_WITH_SECRET}?socket_timeout=120` }).directUrl).toContain('socket_timeout=120');
  });

  it("accepts libpq parameters it does not read when their value asks for what the layer does anyway (a provider's URL as copied)", () => {
    const copied = 'keepalives=1&gssencmode=disable&target_session_attrs=any&client_encoding=UTF8&sslnegotiation=postgres';
    expect(loadConfig({}, { DATABASE_URL: `${URL_WITH_SECRET}?${copied}` }).ssl.mode).toBe('require');
    // Any other value asks for something the layer would not do: refused, with the reason.
    const refused = issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?keepalives=0&gssencmode=require&client_encoding=LATIN1` });
    expect(refused.map((i) => i.setting)).toEqual(['keepalives', 'gssencmode', 'client_encoding'].map((n) => `DATABASE_URL parameter ${n}`));
    expect(refused[2]!.problem).toMatch(/UTF8/);
  });

  it('a parameter given twice is refused: this layer took the first value, libpq, Prisma and node-postgres the last', () => {
    // Before: sslmode=disable (the first) was used, where libpq, prisma migrate and node-postgres use verify-full.
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?sslmode=disable&connect_timeout=5&sslmode=verify-full` })).toEqual([
      { setting: 'DATABASE_URL parameter sslmode', problem: expect.stringMatching(/^is given 2 times.*give it once$/) },
    ]);
  });

  it('an empty parameter (?sslmode=, a template whose variable was unset) is refused instead of read as absent', () => {
    // Before: the default sslmode (require: certificate not checked) applied without a word.
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?sslmode=&schema=app` })).toEqual([{ setting: 'DATABASE_URL parameter sslmode', problem: 'is empty: give it a value, or remove it for the default' }]);
    expect(issuesOf({ DATABASE_URL: URL_WITH_SECRET, DIRECT_URL: `${URL_WITH_SECRET}?sslrootcert=` })[0]!.setting).toBe('DIRECT_URL parameter sslrootcert');
  });

  it('an empty managed timeout in options (-c statement_timeout=) is refused instead of leaving the default', () => {
    // Before: statement_timeout stayed 30 000 ms without a word (PostgreSQL itself refuses the empty value).
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?options=${encodeURIComponent('-c statement_timeout= -c search_path=')}` })).toEqual([
      { setting: 'DATABASE_URL parameter options statement_timeout', problem: expect.stringMatching(/^is empty/) },
    ]);
  });

  it("connects to the unix socket of Prisma's documented form @localhost/db?host=/var/run/postgresql (the URL's host is ignored, as in libpq and Prisma)", () => {
    // Before: the URL's localhost won, and the layer connected over TCP instead of the socket.
    const c = loadConfig({}, { DATABASE_URL: 'postgresql://app@localhost:5433/shop?host=/var/run/postgresql/' });
    expect(c.target).toEqual({ host: '/var/run/postgresql/', port: 5433, user: 'app', database: 'shop' });
    expect(c.ssl.mode).toBe('prefer');
  });

  it("a Prisma URL's sslcert (the server's CA there) without sslkey is told to use sslrootcert, not only to add a key", () => {
    const ca = path.join(mkdtempSync(path.join(tmpdir(), 'cfg-')), 'ca.pem');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nnot parsed\n-----END CERTIFICATE-----\n');
    // Before: only "set DATABASE_URL parameter sslkey too", for a file that is a CA certificate.
    expect(issuesOf({ DATABASE_URL: `${URL_WITH_SECRET}?sslmode=require&sslcert=${encodeURIComponent(ca)}` })).toEqual([
      { setting: 'DATABASE_URL parameter sslkey', problem: expect.stringMatching(/set DATABASE_URL parameter sslkey too \(in a Prisma URL, sslcert names the server's CA certificate: here that is sslrootcert/) },
    ]);
    expect(issuesOf({ DATABASE_URL: URL_WITH_SECRET, DB_SSLCERT: ca })[0]!.problem).not.toContain('Prisma');
  });

  it("takes libpq's user, password, dbname and port parameters when the URL's own part is empty, and refuses both at once", () => {
    const c = loadConfig({}, { DATABASE_URL: `postgresql://db.example.com?user=bob&password=${encodeURIComponent(SECRET)}&dbname=shop&port=6543` });
    expect(c.target).toEqual({ host: 'db.example.com', port: 6543, user: 'bob', database: 'shop' });
    expect(c.target.password).toBe(SECRET);
    const err = configError(() => loadConfig({}, { DATABASE_URL: `postgresql://al:other@db.example.com:5432/shop?user=bob&password=${encodeURIComponent(SECRET)}&port=x` }));
    expect(err.issues.map((i) => i.problem).sort()).toEqual([
      'names the password twice, in the URL and as the password parameter: give it once',
      'names the port twice, in the URL and as the port parameter: give it once',
      'names the user twice, in the URL and as the user parameter: give it once',
    ]);
    expect(err.message).not.toContain(SECRET);
  });
});

describe('loadReplicaConfig', () => {
  const replica = 'postgresql://reader:replica-pw@replica.example.com:5433/app?sslmode=require';

  it("loadConfig (and so doctor) checks each replica URL's own settings, named after the replica, as createDb's replica pools read them", () => {
    // Before: only a malformed replica URL was reported; a bad sslmode surfaced first in createDb.
    const err = configError(() => loadConfig({ pool: { size: 0 } }, { DATABASE_URL: URL_WITH_SECRET, DATABASE_REPLICA_URL: `${replica},postgresql://reader:${encodeURIComponent(SECRET)}@replica2.example.com/app?sslmode=verify-ful&sslmdoe=x` }));
    expect(err.issues.map((i) => i.setting)).toEqual(['pool.size', 'DATABASE_REPLICA_URL[1] parameter sslmdoe', 'DATABASE_REPLICA_URL[1] parameter sslmode']);
    expect(err.message).not.toContain(SECRET);
    expect(configError(() => loadConfig({ replicas: ['postgresql://r@replica.example.com/app?connect_timeout=0'] }, { DATABASE_URL: URL_WITH_SECRET })).issues).toEqual([
      { setting: 'replicas[0] parameter connect_timeout', problem: expect.stringMatching(/at least 1/) },
    ]);
    expect(loadConfig({}, { DATABASE_URL: URL_WITH_SECRET, DATABASE_REPLICA_URL: replica }).replicaUrls).toEqual([replica]);
  });

  it("takes the server from the replica's URL, even when the primary is given by host options", () => {
    const options = { host: 'primary.example.com', port: 6432, database: 'app', user: 'writer', password: 'primary-pw', sslmode: 'require' as const, pool: { size: 3 } };
    // Before: the options won over the URL, as they do for the primary: the replica pool connected to the primary.
    const config = loadReplicaConfig(options, {}, replica, 0);
    expect(config.target).toMatchObject({ host: 'replica.example.com', port: 5433, database: 'app', user: 'reader', password: 'replica-pw' });
    expect(config.pool.size).toBe(3);
    // A URL without a role takes the Db's.
    expect(loadReplicaConfig(options, {}, 'postgresql://replica.example.com/app?sslmode=require', 0).target).toMatchObject({ host: 'replica.example.com', port: 5432, user: 'writer', password: 'primary-pw' });
  });
});

describe('nested option names', () => {
  it('a misspelt nested option is refused, with the others, instead of silently using the default', () => {
    const options = { host: 'db.example.com', password: 'x', pool: { sise: 20, size: 3 }, timeouts: { statementTimeoutMs: 5 } } as unknown as Parameters<typeof loadConfig>[0];
    let err: unknown;
    try {
      loadConfig(options, {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.map((i) => i.setting)).toEqual(['pool.sise', 'timeouts.statementTimeoutMs']);
    expect((err as ConfigError).issues[0]!.problem).toMatch(/maxOverflow/);
  });
});
