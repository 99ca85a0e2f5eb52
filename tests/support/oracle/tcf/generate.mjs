// Test oracle for IAB TCF v2 consent strings (see README.md).
//
//   node generate.mjs [--seed N] [--count N]  >  vectors.jsonl
//
// Builds TC strings with the IAB's own encoder (@iabtechlabtcf/core), mutates
// some of them, and for each string prints 1-3 JSON lines
//   {"name","tc","purposes","legitimate_interest","vendor","granted","invalid"}
// where granted/invalid come from the IAB decoder and the decision rule below.
// --count is the number of valid strings built (default 165); about 2/3 as many
// mutated strings and a fixed set are added. Output depends only on the seed.
import { GVL, TCModel, TCString, PurposeRestriction, Segment, Base64Url } from '@iabtechlabtcf/core';

// ---- arguments and a seeded PRNG (mulberry32); Math.random is never used ----
const arg = (flag, dflt) => {
  const i = process.argv.indexOf(flag);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const SEED = arg('--seed', 1);
const COUNT = arg('--count', 165);
if (!Number.isInteger(SEED) || !Number.isInteger(COUNT) || COUNT < 1) throw new Error('usage: node generate.mjs [--seed N] [--count N>0]');
let state = SEED >>> 0;
function rnd() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
const chance = (p) => rnd() < p;
const pick = (xs) => xs[int(0, xs.length - 1)];
const subset = (xs, p) => xs.filter(() => chance(p));
const range = (lo, hi) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);

const PURPOSES = range(1, 11);
const LI_PURPOSES = [2, 7, 8, 9, 10, 11]; // TCF 2.2: no legitimate interest for 1, 3, 4, 5, 6
const MAX_VENDOR = 400;
const B64 = Base64Url.DICT;

// ---- the decision rule (README.md), always applied to the DECODED string ----
// The TCF spec's segment order, which the IAB decoder does not enforce (it
// decodes a string without a core segment as an empty v2 model, and lets a
// later core segment overwrite the first): the first segment must be the core
// (segment type bits 000) and no later one may be.
function coreFirstOnly(tc) {
  const types = tc.split('.').map((seg) => {
    try {
      return Base64Url.decode(seg.charAt(0)).substr(0, 3);
    } catch {
      return 'bad';
    }
  });
  return types[0] === '000' && types.slice(1).every((t) => t !== '000');
}
function decodeOrNull(tc) {
  if (!coreFirstOnly(tc)) return null;
  try {
    const model = TCString.decode(tc);
    return model.version === 2 ? model : null;
  } catch {
    return null;
  }
}
function decide(model, { purposes, legitimate_interest: li, vendor }) {
  if (!model) return { granted: false, invalid: true };
  const granted = purposes.every((p) => {
    const R = vendor
      ? model.publisherRestrictions.getRestrictions(vendor).filter((r) => r.purposeId === p).map((r) => r.restrictionType)
      : [];
    if (R.includes(0)) return false;
    const consentOk = model.purposeConsents.has(p) && (vendor == null || model.vendorConsents.has(vendor));
    const liOk = li.includes(p) && model.purposeLegitimateInterests.has(p) &&
      (vendor == null || model.vendorLegitimateInterests.has(vendor));
    if (R.includes(1) && !consentOk) return false;
    if (R.includes(2) && !liOk) return false;
    if (R.includes(1) || R.includes(2)) return true;
    return consentOk || liOk;
  });
  return { granted, invalid: false };
}

// ---- a synthetic GVL: vendors 1..400 with seeded declarations. It is looser than
// TCF 2.2 policy (legIntPurposes may name any purpose) so that the encoder keeps
// publisher restrictions of every type: PurposeRestrictionVector.isOkToHave drops
// REQUIRE_CONSENT unless the purpose is flexible+legInt, REQUIRE_LI unless it is
// flexible+consent, NOT_ALLOWED unless declared at all. SemanticPreEncoder also
// unsets purposeLegitimateInterests 1,3,4,5,6 and vendor bits with no declared basis.
function syntheticGvl() {
  const named = (ids) => Object.fromEntries(ids.map((id) => [id, { id, name: `item ${id}`, description: '' }]));
  const vendors = {};
  for (const id of range(1, MAX_VENDOR)) {
    const purposes = subset(PURPOSES, 0.6);
    const legIntPurposes = subset(PURPOSES, 0.5);
    vendors[id] = {
      id, name: `Vendor ${id}`, policyUrl: `https://vendor${id}.example/privacy`,
      purposes, legIntPurposes,
      flexiblePurposes: [...new Set([...purposes, ...legIntPurposes])].filter(() => chance(0.9)),
      specialPurposes: subset([1, 2], 0.5), features: subset([1, 2, 3], 0.5), specialFeatures: subset([1, 2], 0.3),
    };
  }
  return new GVL({
    gvlSpecificationVersion: 3, vendorListVersion: 150, tcfPolicyVersion: 5, lastUpdated: '2024-01-01T00:00:00Z',
    purposes: named(PURPOSES), specialPurposes: named([1, 2]), features: named([1, 2, 3]),
    specialFeatures: named([1, 2]), stacks: {}, vendors,
  });
}
const gvl = syntheticGvl();

// A vendor id set in one of several shapes, so that both vendor encodings occur:
// empty (maxId 0), a few scattered ids and runs (range encoding is shorter),
// dense random sets or only small ids (bitfield is shorter).
function vendorIds() {
  switch (pick(['empty', 'few', 'runs', 'dense', 'small', 'dense'])) {
    case 'empty': return [];
    case 'few': return range(1, int(1, 6)).map(() => int(1, MAX_VENDOR));
    case 'runs': return range(1, int(1, 3)).flatMap(() => { const a = int(1, 350); return range(a, a + int(1, 50)); });
    case 'dense': { const hi = int(20, MAX_VENDOR); return subset(range(1, hi), rnd()).concat([hi]); }
    case 'small': return subset(range(1, 45), 0.3);
  }
}

// ---- valid strings: random TCModels encoded by the IAB encoder ----
function randomTcString(forceOptions) {
  const m = new TCModel(gvl);
  m.created = new Date(Date.UTC(int(2020, 2024), int(0, 11), int(1, 28)));
  m.lastUpdated = new Date(m.created.getTime() + int(0, 90) * 86400000);
  m.cmpId = int(2, 4095); m.cmpVersion = int(0, 4095); m.consentScreen = int(0, 63);
  m.vendorListVersion = int(1, 4095); m.policyVersion = pick([2, 4, 5]);
  m.publisherCountryCode = pick(['DE', 'FR', 'GB', 'AA', 'IT', 'NL']);
  m.useNonStandardTexts = chance(0.2); m.purposeOneTreatment = chance(0.2);
  m.specialFeatureOptins.set(subset(range(1, 12), 0.3));
  m.purposeConsents.set(subset(PURPOSES, 0.3 + 0.7 * rnd()));
  m.purposeLegitimateInterests.set(subset(PURPOSES, rnd()));
  m.vendorConsents.set(vendorIds());
  m.vendorLegitimateInterests.set(chance(0.3) ? [...m.vendorConsents.values()] : vendorIds());
  // Publisher restrictions only for service-specific strings (about half).
  m.isServiceSpecific = chance(0.5);
  const known = [...m.vendorConsents.values(), ...m.vendorLegitimateInterests.values()];
  if (m.isServiceSpecific) {
    for (let i = int(0, 5); i > 0; i--) {
      // Mostly purposes and vendors that have bits set, so that restrictions decide often.
      const type = pick([0, 1, 1, 2, 2]);
      const set = [...(type === 2 ? m.purposeLegitimateInterests : m.purposeConsents).values()]
        .filter((p) => type !== 2 || LI_PURPOSES.includes(p));
      const pr = new PurposeRestriction(set.length && chance(0.7) ? pick(set) : int(1, 11), type);
      const first = known.length && chance(0.8) ? pick(known) : int(1, MAX_VENDOR);
      const last = chance(0.5) ? first : Math.min(MAX_VENDOR, first + int(1, 30));
      for (const v of range(first, last)) m.publisherRestrictions.add(v, pr);
    }
  }
  // Extra segments: disclosed / allowed vendors and the publisher TC segment.
  m.vendorsDisclosed.set([...known, ...vendorIds()]);
  m.supportOOB = chance(0.5);
  m.vendorsAllowed.set(vendorIds());
  m.publisherConsents.set(subset(PURPOSES, 0.5));
  m.publisherLegitimateInterests.set(subset(PURPOSES, 0.3));
  m.numCustomPurposes = int(0, 4);
  m.publisherCustomConsents.set(subset(range(1, m.numCustomPurposes), 0.5));
  m.publisherCustomLegitimateInterests.set(subset(range(1, m.numCustomPurposes), 0.5));
  const options = pick([
    undefined, // library default: core.disclosed(.publisherTC when service-specific)
    { segments: [Segment.CORE] },
    { isForVendors: true },
    { segments: [Segment.CORE, ...subset([Segment.VENDORS_DISCLOSED, Segment.VENDORS_ALLOWED, Segment.PUBLISHER_TC], 0.5)] },
  ]);
  return TCString.encode(m, forceOptions ?? options);
}

// ---- policies: biased towards what the decoded string grants ----
function randomPolicy(model) {
  const usedPurposes = model
    ? PURPOSES.filter((p) => model.purposeConsents.has(p) || model.purposeLegitimateInterests.has(p)) : [];
  let purposes = usedPurposes.length && chance(0.8) ? subset(usedPurposes, 0.4) : subset(PURPOSES, 0.2);
  if (!purposes.length) purposes = [pick(usedPurposes.length ? usedPurposes : PURPOSES)];
  const withBits = model ? [...model.vendorConsents.values(), ...model.vendorLegitimateInterests.values()]
    .filter((v) => v >= 1 && v <= MAX_VENDOR) : [];
  // Half the time, when the string has publisher restrictions, aim the policy at
  // one: its purpose, and preferably a restricted vendor that also has a bit set.
  const restrictions = model ? model.publisherRestrictions.getRestrictions().filter((r) => PURPOSES.includes(r.purposeId)) : [];
  let vendor, aimed;
  if (restrictions.length && chance(0.5)) {
    const r = pick(restrictions);
    const restricted = model.publisherRestrictions.getVendors(r).filter((v) => v >= 1 && v <= MAX_VENDOR);
    const alsoBits = restricted.filter((v) => withBits.includes(v));
    vendor = alsoBits.length && chance(0.7) ? pick(alsoBits) : restricted.length && chance(0.9) ? pick(restricted) : int(1, MAX_VENDOR);
    aimed = r.purposeId;
    purposes = chance(0.5) ? [aimed] : [...new Set([...purposes, aimed])].sort((a, b) => a - b);
  }
  const legitimate_interest = purposes.filter((p) => LI_PURPOSES.includes(p) && chance(p === aimed ? 0.8 : 0.6));
  const r = rnd();
  if (vendor === undefined) vendor = r < 0.5 && withBits.length ? pick(withBits) : r < 0.75 ? int(1, MAX_VENDOR) : null;
  return { purposes, legitimate_interest, vendor };
}

// ---- mutations of valid strings; the expected value is whatever the IAB decoder says ----
const ODD_CHARS = ['+', '/', '=', ' ', '.', 'é', 'ß', 'Ж', 'Ａ'];
const b64chars = (n) => range(1, n).map(() => pick([...B64])).join('');
const insertAt = (s, i, x) => s.slice(0, i) + x + s.slice(i);
// Core header fields as [first bit, width, boundary values], and a patcher that
// rewrites one of them in the core segment (re-encoded to the same length).
const HEADER_FIELDS = {
  cmpId: [78, 12, [0, 1, 2]], cmpVersion: [90, 12, [0]], consentLanguage: [108, 6, [26, 63]],
  vendorListVersion: [120, 12, [0]], policyVersion: [132, 6, [0, 63]], publisherCountryCode: [201, 6, [0, 25, 26, 57, 58, 63]],
};
function patchCore(s, field, value) {
  const [at, width, values] = HEADER_FIELDS[field];
  value ??= pick(values);
  const [core, ...rest] = s.split('.');
  const bits = Base64Url.decode(core);
  const patched = bits.slice(0, at) + value.toString(2).padStart(width, '0') + bits.slice(at + width);
  return [[Base64Url.encode(patched), ...rest].join('.'), `${field} := ${value}`];
}
const MUTATIONS = {
  truncate: (s) => { const n = int(1, s.length - 1); return [s.slice(0, n), `truncate@${n}`]; },
  replace: (s) => {
    const i = int(0, s.length - 1);
    if (s[i] === '.') return [s.slice(0, i) + 'A' + s.slice(i + 1), `replace@${i}`];
    return [s.slice(0, i) + pick([...B64.replace(s[i], '')]) + s.slice(i + 1), `replace@${i}`];
  },
  odd_char: (s) => { const i = int(1, s.length); const c = pick(ODD_CHARS); return [insertAt(s, i, c), `insert ${JSON.stringify(c)}@${i}`]; },
  version: (s) => { const v = pick([0, 1, 3, 4]); return [B64[v] + s.slice(1), `version ${v}`]; },
  garbage_segment: (s) => { const g = b64chars(int(1, 12)); return [`${s}.${g}`, `append .${g}`]; },
  empty_segment: (s) => {
    const dots = [...s].flatMap((c, i) => (c === '.' ? [i] : []));
    return dots.length && chance(0.5) ? [insertAt(s, dots[0], '.'), 'empty segment (..)'] : pick([[`${s}.`, 'trailing .'], [`.${s}`, 'leading .']]);
  },
  no_core: (s) => { const rest = s.split('.').slice(1); return rest.length ? [rest.join('.'), 'core removed'] : [s + b64chars(4), 'core +4 chars']; },
  // Overwrite one core header field with a boundary value; the decoder checks some
  // (cmpId > 1, country code letters within [A-z]) and not others.
  header_field: (s) => patchCore(s, pick(Object.keys(HEADER_FIELDS)), null),
  core_twice: (s) => { const core = s.split('.')[0]; return [`${s}.${core}`, 'core appended again']; },
  extend_core: (s) => { const [core, ...rest] = s.split('.'); return [[core + b64chars(int(1, 8)), ...rest].join('.'), 'core extended']; },
};

// ---- output ----
let lines = 0, granted = 0, invalid = 0;
function emit(name, tc, policies) {
  if (tc === '') return;
  const model = decodeOrNull(tc);
  (policies ?? range(1, int(1, 3)).map(() => randomPolicy(model))).forEach((policy, i) => {
    const d = decide(model, policy);
    lines++; granted += d.granted; invalid += d.invalid;
    process.stdout.write(JSON.stringify({ name: `${name} #${i + 1}`, tc, ...policy, ...d }) + '\n');
  });
  return model;
}

// Which vendorConsents encoding the core segment uses (bit 229 = after 213 fixed
// bits and the 16-bit maxId), to check on stderr that both kinds occur.
const encodings = { bitfield: 0, range: 0, none: 0 };
const valid = [];
for (let i = 0; i < COUNT; i++) {
  const tc = randomTcString();
  const bits = Base64Url.decode(tc.split('.')[0]);
  const kind = parseInt(bits.slice(213, 229), 2) === 0 ? 'none' : bits[229] === '1' ? 'range' : 'bitfield';
  encodings[kind]++;
  valid.push(tc);
  const model = emit(`valid ${i} (${tc.split('.').length} segments, vendors ${kind})`, tc);
  if (!model) throw new Error(`encoder produced an undecodable string: ${tc}`);
}

const accepted = {};
for (let i = 0; i < Math.round((COUNT * 2) / 3); i++) {
  const kind = pick(Object.keys(MUTATIONS));
  const src = int(0, valid.length - 1);
  const [tc, what] = MUTATIONS[kind](valid[src]);
  if (emit(`mutated valid ${src}: ${what}`, tc)) accepted[kind] = (accepted[kind] ?? 0) + 1;
}

// Fixed cases: published examples, single characters, runs of 'A', each under two policies.
const fixedPolicies = () => [
  { purposes: [1], legitimate_interest: [], vendor: null },
  { purposes: [1, 2, 7], legitimate_interest: [2, 7], vendor: int(1, MAX_VENDOR) },
];
emit('published v1 string', 'BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA', fixedPolicies());
// v1 strings written by the IAB encoder itself: they decode, with version 1.
for (let i = 0; i < 3; i++) emit(`library-encoded v1 string ${i}`, randomTcString({ version: 1 }), fixedPolicies());
// The v2 example consents to purposes 1-3 and vendors 2, 6, 8 (no LI, no restrictions).
emit('published v2 example', 'COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA', [
  { purposes: [1], legitimate_interest: [], vendor: null },
  { purposes: [2], legitimate_interest: [2], vendor: 8 },
  { purposes: [1, 2, 3], legitimate_interest: [2], vendor: 6 },
  { purposes: [1], legitimate_interest: [], vendor: 7 },
  { purposes: [4], legitimate_interest: [], vendor: 2 },
]);
for (const c of ['C', 'A', 'B', 'D', 'I', 'Y', 'g', '_']) emit(`single character ${c}`, c, fixedPolicies());
for (const n of [2, 4, 8, 16, 32, 64]) emit(`${n} A characters`, 'A'.repeat(n), fixedPolicies());
emit('disclosed-vendors segment only', 'IAAAA', fixedPolicies());
for (const [field, value] of [['cmpId', 0], ['cmpId', 1], ['publisherCountryCode', 57], ['publisherCountryCode', 58]]) {
  const [tc, what] = patchCore(valid[0], field, value);
  emit(`valid 0 with ${what}`, tc, fixedPolicies());
}

process.stderr.write(`lines ${lines}, granted ${granted} (${Math.round((100 * granted) / lines)}%), ` +
  `invalid ${invalid}; vendorConsents encodings ${JSON.stringify(encodings)}; ` +
  `mutations decoded as valid v2 ${JSON.stringify(accepted)}\n`);
