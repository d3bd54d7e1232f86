// Model ids the server answers to, and A/B routes over them.
//
//   base model        --served-model-name (default: the model folder's name); "base" is an alias
//   each adapter      --adapter NAME=DIR        → model id NAME (LoRA over the one base in memory)
//   each route        --route NAME=ARM:W,ARM:W  → virtual model id NAME; every request to it goes to
//                                                one arm (a base or adapter id), chosen by weight
//
// The choice is seeded (--route-seed): a request that names a `user` (OpenAI's field) always gets
// the same arm for that user (a hash of seed, route and user), so an A/B test sees each user on one
// side; requests without a user draw from the route's own seeded stream.
import { createHash } from 'node:crypto';
import { Rng } from '../engine/random.js';
import { InputError } from '../errors.js';

/** The alias every route and request may use for the base model. */
export const BASE_ALIAS = 'base';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:/-]*$/;
/** A route weight: digits with an optional fraction (no sign, exponent, hex or words). */
const DECIMAL = /^(?:\d+(?:\.\d*)?|\.\d+)$/;

export interface RouteArm {
  model: string;
  weight: number;
}

export interface RouteSpec {
  name: string;
  arms: RouteArm[];
}

function checkName(name: string, flag: string, spec: string): void {
  if (!NAME.test(name)) {
    throw new InputError(
      `${JSON.stringify(spec)}: the name ${JSON.stringify(name)} must start with a letter or digit and use only letters, digits and . _ : / -`,
      { key: flag },
    );
  }
}

/** `NAME=DIR` of --adapter. */
export function parseAdapterSpec(spec: string): { name: string; dir: string } {
  const eq = spec.indexOf('=');
  if (eq <= 0 || eq === spec.length - 1)
    throw new InputError(`expected NAME=DIR, got ${JSON.stringify(spec)}`, { key: 'adapter' });
  const name = spec.slice(0, eq);
  checkName(name, 'adapter', spec);
  return { name, dir: spec.slice(eq + 1) };
}

/** `NAME=ARM:WEIGHT,ARM:WEIGHT,...` of --route. */
export function parseRouteSpec(spec: string): RouteSpec {
  const eq = spec.indexOf('=');
  if (eq <= 0)
    throw new InputError(`expected NAME=MODEL:WEIGHT,MODEL:WEIGHT, got ${JSON.stringify(spec)}`, { key: 'route' });
  const name = spec.slice(0, eq);
  checkName(name, 'route', spec);
  const arms = spec
    .slice(eq + 1)
    .split(',')
    .map((part) => {
      const colon = part.lastIndexOf(':');
      const text = part.slice(colon + 1);
      // Plain decimals only: Number() would also read 0x10, 1e308, Infinity and " 1 ".
      const weight = DECIMAL.test(text) ? Number(text) : NaN;
      if (colon <= 0 || !Number.isFinite(weight)) {
        throw new InputError(
          `${JSON.stringify(spec)}: each arm is MODEL:WEIGHT with a weight >= 0 written as a decimal number (e.g. 50 or 0.5), got ${JSON.stringify(part)}`,
          { key: 'route' },
        );
      }
      return { model: part.slice(0, colon), weight };
    });
  const total = arms.reduce((a, b) => a + b.weight, 0);
  if (!Number.isFinite(total))
    throw new InputError(
      `${JSON.stringify(spec)}: the weights add up to more than the largest number (use smaller weights in the same ratio)`,
      { key: 'route' },
    );
  if (arms.length < 1 || !(total > 0))
    throw new InputError(`${JSON.stringify(spec)}: the weights must add up to more than 0`, { key: 'route' });
  const seen = new Set<string>();
  for (const a of arms) {
    if (seen.has(a.model))
      throw new InputError(`${JSON.stringify(spec)}: model ${JSON.stringify(a.model)} appears twice`, { key: 'route' });
    seen.add(a.model);
  }
  return { name, arms };
}

/** Where a request goes: a concrete model id (null adapter = the base) and, via a route, its arm. */
export interface Resolved {
  /** The concrete model id that serves the request (base id or adapter name). */
  model: string;
  /** The adapter name, or null for the base model. */
  adapter: string | null;
  route?: { name: string; arm: string };
}

export class ModelRouter {
  private readonly routes = new Map<string, { spec: RouteSpec; cumulative: number[]; total: number; rng: Rng }>();

  constructor(
    readonly baseId: string,
    readonly adapterNames: readonly string[],
    routes: readonly RouteSpec[],
    private readonly seed = 0,
  ) {
    checkName(baseId, 'served-model-name', baseId);
    const taken = new Set<string>([baseId, BASE_ALIAS]);
    for (const a of adapterNames) {
      if (taken.has(a))
        throw new InputError(
          `adapter name ${JSON.stringify(a)} is already taken (the base model is ${JSON.stringify(baseId)}, also reachable as "${BASE_ALIAS}")`,
          { key: 'adapter' },
        );
      taken.add(a);
    }
    routes.forEach((r, i) => {
      if (taken.has(r.name))
        throw new InputError(`route name ${JSON.stringify(r.name)} is already a model id`, { key: 'route' });
      taken.add(r.name);
      for (const arm of r.arms) {
        if (this.concrete(arm.model) === null) {
          throw new InputError(
            `route ${JSON.stringify(r.name)}: unknown model ${JSON.stringify(arm.model)} (known: ${[BASE_ALIAS, baseId, ...adapterNames].join(', ')})`,
            { key: 'route' },
          );
        }
      }
      const cumulative: number[] = [];
      let total = 0;
      for (const arm of r.arms) cumulative.push((total += arm.weight));
      this.routes.set(r.name, { spec: r, cumulative, total, rng: new Rng((seed + 0x9e3779b9 * (i + 1)) >>> 0) });
    });
  }

  /** Every id a client can ask for: the base, the adapters, the routes. */
  ids(): { id: string; kind: 'base' | 'adapter' | 'route'; route?: RouteSpec }[] {
    return [
      { id: this.baseId, kind: 'base' as const },
      ...this.adapterNames.map((id) => ({ id, kind: 'adapter' as const })),
      ...[...this.routes.values()].map((r) => ({ id: r.spec.name, kind: 'route' as const, route: r.spec })),
    ];
  }

  routeNames(): string[] {
    return [...this.routes.keys()];
  }

  /** The model a request for `id` goes to, or null when `id` is unknown. */
  resolve(id: string, user?: string | null): Resolved | null {
    const direct = this.concrete(id);
    if (direct) return direct;
    const r = this.routes.get(id);
    if (!r) return null;
    const u = user ? userDraw(this.seed, id, user) : r.rng.uniform();
    const x = u * r.total;
    let i = r.cumulative.findIndex((c) => x < c);
    if (i < 0) i = r.cumulative.length - 1;
    // Zero-weight arms are never chosen (x < c is false on a flat step).
    const arm = r.spec.arms[i]!;
    return { ...this.concrete(arm.model)!, route: { name: id, arm: arm.model } };
  }

  private concrete(id: string): Resolved | null {
    if (id === this.baseId || id === BASE_ALIAS) return { model: this.baseId, adapter: null };
    if (this.adapterNames.includes(id)) return { model: id, adapter: id };
    return null;
  }
}

/** A uniform number in [0, 1) fixed by (seed, route, user). */
function userDraw(seed: number, route: string, user: string): number {
  const h = createHash('sha256').update(`${seed}\0${route}\0${user}`).digest();
  return h.readUInt32BE(0) / 4294967296;
}
