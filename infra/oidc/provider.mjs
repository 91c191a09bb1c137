// An OpenID Provider on loopback for the portal's browser test under JWT: the npm
// registry's `oidc-provider` (a certified implementation), with one public client (the
// portal: PKCE required, no secret), its development login form (any login and
// password; the login is the account, and the store its access token names), and
// access tokens that are RS256 JWTs for the API's audience carrying the store claim,
// as a Cognito user pool's are with a pre-token-generation trigger.
//
// Its token endpoint is served on a second loopback port (a proxy to the first), so
// that the token endpoint's origin is not the issuer's, as with Cognito's hosted domain.
//
//   node infra/oidc/provider.mjs --redirect-uri http://127.0.0.1:P/portal \
//        [--client-id herald-portal] [--store-claim store_id]
//
// Prints one line of JSON once both ports listen: {"issuer", "token_endpoint"}.
// Everything binds 127.0.0.1 on ports the OS picks; the signing key is made at start.

import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    'redirect-uri': { type: 'string' },
    'client-id': { type: 'string', default: 'herald-portal' },
    'store-claim': { type: 'string', default: 'store_id' },
  },
});
if (!args['redirect-uri']) {
  console.error('usage: node infra/oidc/provider.mjs --redirect-uri http://127.0.0.1:PORT/portal');
  process.exit(2);
}
const clientId = args['client-id'];
const storeClaim = args['store-claim'];
const redirectUri = args['redirect-uri'];
const redirectOrigin = new URL(redirectUri).origin;

const listen = (server) => new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', () => resolve(server.address().port));
});

const issuerServer = http.createServer();
const tokenServer = http.createServer();
const issuerPort = await listen(issuerServer);
const tokenPort = await listen(tokenServer);
const issuer = `http://127.0.0.1:${issuerPort}`;
const tokenEndpoint = `http://127.0.0.1:${tokenPort}/token`;
// The resource the access tokens are for (RFC 8707): the API, whose JWT authorizer
// accepts the portal's client id as audience.
const resource = 'urn:herald:api';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key-1', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    token_endpoint_auth_method: 'none',
    application_type: 'web',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [redirectUri],
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  pkce: { required: () => true },
  // The portal's page may call the token endpoint from its own origin only.
  clientBasedCORS: (ctx, origin, client) => client.clientId === clientId && origin === redirectOrigin,
  claims: { openid: ['sub', storeClaim] },
  async findAccount(ctx, id) {
    return { accountId: id, claims: async () => ({ sub: id, [storeClaim]: id }) };
  },
  async extraTokenClaims(ctx, token) {
    return token.kind === 'AccessToken' ? { [storeClaim]: token.accountId } : undefined;
  },
  // The portal is first party: no consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid');
    grant.addOIDCClaims(['sub', storeClaim]);
    grant.addResourceScope(resource, 'herald');
    await grant.save();
    return grant;
  },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, indicator) => {
        if (indicator !== resource) throw new Provider.errors.InvalidTarget();
        return { scope: 'herald', audience: clientId, accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
});

// The discovery document names the token endpoint on the second port.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/.well-known/openid-configuration' && ctx.body && typeof ctx.body === 'object') {
    ctx.body.token_endpoint = tokenEndpoint;
  }
});

const callback = provider.callback();
issuerServer.on('request', callback);
// The second origin: only /token, handed to the provider as if addressed to the issuer.
tokenServer.on('request', (req, res) => {
  const path = new URL(req.url, tokenEndpoint).pathname;
  if (path !== '/token') {
    res.writeHead(404).end();
    return;
  }
  const forward = http.request({
    host: '127.0.0.1', port: issuerPort, method: req.method, path: req.url,
    headers: { ...req.headers, host: `127.0.0.1:${issuerPort}` },
  }, (answer) => {
    res.writeHead(answer.statusCode, answer.headers);
    answer.pipe(res);
  });
  forward.on('error', () => res.writeHead(502).end());
  req.pipe(forward);
});

const stop = () => { issuerServer.close(); tokenServer.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

console.log(JSON.stringify({ issuer, token_endpoint: tokenEndpoint }));
