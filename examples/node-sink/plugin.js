'use strict';
// plugin.js serves a sink to pipelined over go-plugin's gRPC protocol, as
// docs/plugin-protocol.md specifies it: the magic cookie, the handshake line
// on stdout, AutoMTLS, the health and controller services and the Sink
// service of sdk/proto/sink.proto. It knows nothing of what the sink does:
// serve(sink) takes an object with configure, deliver and, optionally,
// close and describe (see sink.js).

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const forge = require('node-forge');

// The go-plugin handshake pipelined uses (sdk/internal/wire).
const MAGIC_COOKIE_KEY = 'PIPELINED_PLUGIN';
const MAGIC_COOKIE_VALUE = 'sink-9f3b6c1e4a7d';
const CORE_PROTOCOL_VERSION = 1; // go-plugin's own
const APP_PROTOCOL_VERSION = 1; // sdk/proto's

// WRAP_UP_REASON is why the signal of a Deliver ends when the host wraps it
// up (the Go sdk's sdk.ErrWrapUp).
const WRAP_UP_REASON = 'the daemon is stopping';

// log writes one JSON line to stderr with @level and @message, which the
// host re-logs at that level under the sink's name.
function log(level, message, fields = {}) {
  process.stderr.write(JSON.stringify({ '@level': level, '@message': message, ...fields }) + '\n');
}

// sinkProtoPath finds sink.proto: a copy next to this file (a sink built
// outside the pipelined repository copies it there), else the repository's.
function sinkProtoPath() {
  const own = path.join(__dirname, 'proto', 'sink.proto');
  if (fs.existsSync(own)) return own;
  return path.join(__dirname, '..', '..', 'sdk', 'proto', 'sink.proto');
}

function load(file) {
  return grpc.loadPackageDefinition(protoLoader.loadSync(file, {
    keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
  }));
}

// selfSignedCert makes the plugin's certificate for AutoMTLS, as go-plugin's
// own plugins do (mtls.go): self-signed, a CA, for "localhost", for server
// and client auth. It returns the PEM key and certificate and the
// certificate's DER bytes.
function selfSignedCert() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey);
  const serial = crypto.randomBytes(16);
  serial[0] &= 0x7f; // a positive serial number
  cert.serialNumber = serial.toString('hex');
  cert.validity.notBefore = new Date(Date.now() - 30 * 1000);
  cert.validity.notAfter = new Date(Date.now() + 365 * 24 * 3600 * 1000);
  const name = [{ name: 'commonName', value: 'localhost' }, { name: 'organizationName', value: 'pipelined sink' }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, keyCertSign: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }] },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(privateKey), forge.md.sha256.create());
  const der = Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), 'binary');
  return { keyPem: privateKey, certPem: forge.pki.certificateToPem(cert), der };
}

// status makes a gRPC error with a code the host understands.
function status(code, err) {
  return { code, details: err && err.message ? err.message : String(err) };
}

// toEvent turns a wire Event into the object a sink's deliver gets.
function toEvent(e) {
  const ts = e.received_at || { seconds: 0, nanos: 0 };
  return {
    id: e.id,
    source: e.source,
    route: e.route,
    receivedAt: new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6)),
    headers: e.headers || {},
    body: e.body, // a Buffer of JSON, as received
    transformed: e.payload && e.payload.length > 0 ? e.payload : null,
    attempt: e.attempt,
    // traceparent / tracestate of this attempt's span ({} when the daemon
    // does not trace): send them on as HTTP headers of the same names.
    traceContext: e.trace_context || {},
  };
}

// toResult turns a sink's answer for one event into a wire Result.
function toResult(r) {
  switch (r && r.outcome) {
    case 'delivered':
      return { outcome: 'OUTCOME_DELIVERED' };
    case 'retry':
      return withDelay({ outcome: 'OUTCOME_RETRY', error: String(r.error || '') }, r.retryAfterMs);
    case 'permanent':
      return { outcome: 'OUTCOME_PERMANENT', error: String(r.error || '') };
    case 'not_attempted':
      // Not sent at all (out of time, throttled before it): put back
      // without costing an attempt, not before retryAfterMs (unset: soon).
      return withDelay({ outcome: 'OUTCOME_NOT_ATTEMPTED', error: String(r.error || '') }, r.retryAfterMs);
  }
  return { outcome: 'OUTCOME_RETRY', error: 'sink returned an invalid result: ' + JSON.stringify(r) };
}

// withDelay sets out's retry_after to ms milliseconds when ms is positive.
function withDelay(out, ms) {
  if (ms > 0) {
    out.retry_after = { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
  }
  return out;
}

// serve serves sink and returns when the host stops the plugin.
function serve(sink) {
  if (process.env[MAGIC_COOKIE_KEY] !== MAGIC_COOKIE_VALUE) {
    process.stderr.write(`${process.argv[1]} is a pipelined sink plugin: pipelined starts it when a [[sink]] names it; it is not meant to be run by hand\n`);
    process.exit(1);
  }
  // The host asks for the versions it speaks; this plugin speaks 1 only and
  // says so in the handshake, and the host refuses it if 1 is not among them.
  const offered = (process.env.PLUGIN_PROTOCOL_VERSIONS || '').split(',').filter(Boolean);
  if (offered.length > 0 && !offered.includes(String(APP_PROTOCOL_VERSION))) {
    log('error', 'the host does not speak this plugin\'s protocol version', { plugin: APP_PROTOCOL_VERSION, host: offered.join(',') });
  }
  // go-plugin plugins ignore SIGINT (a Ctrl-C reaches the whole process
  // group; the host stops its plugins itself).
  process.on('SIGINT', () => {});

  const sinkPkg = load(sinkProtoPath()).pipelined.sink.v1;
  const health = load(path.join(__dirname, 'proto', 'health.proto')).grpc.health.v1;
  const controller = load(path.join(__dirname, 'proto', 'controller.proto')).plugin;

  const server = new grpc.Server({
    'grpc.max_receive_message_length': -1,
    'grpc.max_send_message_length': -1,
  });
  const inFlight = new Set(); // the AbortControllers of the Delivers in flight
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    server.tryShutdown(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };

  server.addService(health.Health.service, {
    Check: (call, cb) => cb(null, { status: 'SERVING' }),
    Watch: (call) => { call.write({ status: 'SERVING' }); },
  });
  server.addService(controller.GRPCController.service, {
    Shutdown: (call, cb) => { cb(null, {}); setImmediate(stop); },
  });
  server.addService(sinkPkg.Sink.service, {
    Configure: async (call, cb) => {
      let config;
      try {
        const raw = call.request.config && call.request.config.length ? call.request.config.toString('utf8') : '{}';
        config = JSON.parse(raw);
      } catch (err) {
        return cb(status(grpc.status.INVALID_ARGUMENT, `config is not JSON: ${err.message}`));
      }
      try {
        await sink.configure(config, call.request.sink);
        cb(null, {});
      } catch (err) {
        cb(status(grpc.status.INVALID_ARGUMENT, err));
      }
    },
    Deliver: async (call, cb) => {
      const events = call.request.events.map(toEvent);
      // WrapUp aborts this signal: the host is stopping and wants the
      // answer now, for what the sink did (see WrapUp below).
      const wrap = new AbortController();
      inFlight.add(wrap);
      let results;
      try {
        results = await sink.deliver(events, wrap.signal);
      } catch (err) {
        // ABORTED: the sink failed the whole batch; the host retries it.
        return cb(status(grpc.status.ABORTED, err));
      } finally {
        inFlight.delete(wrap);
      }
      if (results == null) {
        return cb(null, { results: events.map(() => ({ outcome: 'OUTCOME_DELIVERED' })) });
      }
      if (results.length !== events.length) {
        return cb(status(grpc.status.INTERNAL, `sink returned ${results.length} results for a batch of ${events.length} events`));
      }
      cb(null, { results: results.map(toResult) });
    },
    // WrapUp: the host is stopping and asks each Deliver in flight to
    // answer now for what it did (sdk.ErrWrapUp in the Go sdk): their
    // signal is aborted with that reason, and a sink that watches it
    // answers OUTCOME_NOT_ATTEMPTED for what it did not send. A sink that
    // ignores it just finishes; a plugin without WrapUp answers
    // UNIMPLEMENTED (grpc-js does for a method not implemented), and the
    // host then waits for the Deliver as before.
    WrapUp: (call, cb) => {
      for (const wrap of inFlight) wrap.abort(new Error(WRAP_UP_REASON));
      cb(null, { calls: inFlight.size });
    },
    Close: async (call, cb) => {
      try {
        if (sink.close) await sink.close();
        cb(null, {});
      } catch (err) {
        cb(status(grpc.status.INTERNAL, err));
      }
    },
    Describe: (call, cb) => {
      if (!sink.describe) {
        return cb(status(grpc.status.UNIMPLEMENTED, 'the sink does not describe its config'));
      }
      const d = sink.describe();
      cb(null, {
        summary: d.summary,
        fields: d.fields.map((f) => ({
          name: f.name, type: f.type, default_value: f.default || '',
          required: !!f.required, secret: !!f.secret, doc: f.doc || '',
        })),
      });
    },
  });

  // AutoMTLS: the host sent its certificate; answer with ours and accept
  // only clients that present the host's.
  let credentials = grpc.ServerCredentials.createInsecure();
  let certField = '';
  const hostCert = process.env.PLUGIN_CLIENT_CERT;
  if (hostCert) {
    const own = selfSignedCert();
    credentials = grpc.ServerCredentials.createSsl(Buffer.from(hostCert),
      [{ private_key: Buffer.from(own.keyPem), cert_chain: Buffer.from(own.certPem) }], true);
    certField = own.der.toString('base64').replace(/=+$/, ''); // base64 without padding
  }

  const dir = fs.mkdtempSync(path.join(process.env.PLUGIN_UNIX_SOCKET_DIR || os.tmpdir(), 'plugin'));
  const socket = path.join(dir, 'sink.sock');
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  process.on('SIGTERM', stop);

  server.bindAsync(`unix:${socket}`, credentials, (err) => {
    if (err) {
      log('error', 'cannot listen', { socket, error: err.message });
      process.exit(1);
    }
    // The handshake: the one line this plugin ever writes to stdout.
    process.stdout.write(`${CORE_PROTOCOL_VERSION}|${APP_PROTOCOL_VERSION}|unix|${socket}|grpc|${certField}\n`);
    // Anything printed later would go to the host, which discards it:
    // send console output to stderr instead.
    console.log = console.info = console.error;
  });
}

module.exports = { serve, log };
