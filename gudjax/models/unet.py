"""DDPM++-like U-Net (Flax NNX) that predicts eps for GUD (docs/maths.md §5).

Input / output (all image arrays NHWC, float32):
  x            (B, H, W, C)  the whitened image Uᵀz_t (about unit variance).
  gamma_groups (B, G, 3)     per conditioning group g: (mean, min, max) over the
                             components i of group g of γ̃_i(t) = -log SNR_i(t).
  gamma_map    (B, H, W, C)  γ̃ in image layout (only with ``gamma_map_channel``).
  t            (B,)          time in [0, 1] (only with ``conditioning="t"``).
  returns eps_hat (B, H, W, C).

Conditioning (``conditioning``):
  "gamma": tokens  token_g = e_g + MLP(phi(gamma_groups[:, g]))   (B, G, token_dim)
           with e_g a learned group embedding and phi the Fourier features
           phi(v) = [v', sin(w_k v'), cos(w_k v')],  v' = gamma_input_scale · v,
           w_k = π · 2^(k-1), k = 0..num_fourier-1, applied to each of the 3 stats.
           Global embedding  emb = MLP(mean_g SiLU(W token_g))  (a Deep-Sets pooling:
           the nonlinearity before the mean keeps which group carries which γ̃),
           added in every ResBlock like a time embedding; cross-attention from the
           feature map (H·W queries) to the G tokens at ``cross_attn_resolutions``
           and in the middle block.
  "t":     emb = MLP(sinusoidal(1000 t)); no tokens, no cross-attention (the official
           GUD code's choice, kept as a baseline).
  ``gamma_map_channel`` (independent): concatenate gamma_input_scale · gamma_map to x.

Architecture: conv_in → for each level l (resolution H / 2^l, channels ch·ch_mult[l]):
num_res_blocks ResBlocks (+ self-attention where the resolution is in
``attn_resolutions``, + cross-attention where it is in ``cross_attn_resolutions``),
then a stride-2 conv (not after the last level) → middle (ResBlock, self-attention,
cross-attention, ResBlock) → mirror path with num_res_blocks+1 ResBlocks per level
fed by skip connections, nearest ×2 upsampling + conv → GroupNorm, SiLU, conv_out.
Residual sums are rescaled by 1/√2 (DDPM++ ``skip_rescale``). The last conv of
every ResBlock, every attention output projection and conv_out are zero-initialised,
so the untrained network returns eps_hat = 0 exactly.

The global embedding enters each ResBlock as a FiLM scale and shift after its second
GroupNorm (``scale_shift_norm``, as in improved DDPM / ADM) or as an added bias
before it (DDPM++).

Resolutions in ``attn_resolutions`` / ``cross_attn_resolutions`` are feature-map
heights (e.g. 8 for the 8×8 level of a 32×32 model). GroupNorm uses the largest
divisor of the channel count ≤ max_norm_groups that keeps ≥ 4 channels per group
(``norm_groups``), so any channel count works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

CONDITIONINGS = ("gamma", "t")
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def _zeros_init(key, shape, dtype=jnp.float32):
    del key
    return np.zeros(shape, np.float32)


def _ones_init(key, shape, dtype=jnp.float32):
    del key
    return np.ones(shape, np.float32)


class NoisePool:
    """Host-side initialisers: every random initial value is a slice of ONE N(0, 1) draw.

    Initialising each tensor from its own key, or slicing inside jit, makes XLA compile
    one kernel per tensor (30-100 ms each on CPU: 5-10 s for a small U-Net). Here the
    initialisers hand out numpy arrays (zeros) and record (array, std); ``fill(key)``
    then draws one jax.random.normal buffer of the total size and writes consecutive
    slices into those arrays in construction order, so params are a deterministic
    function of the key and there is a single random compile.
    """

    def __init__(self):
        self.requests: list[tuple[np.ndarray, float]] = []

    def _take(self, shape, std):
        value = np.zeros(shape, np.float32)
        self.requests.append((value, float(std)))
        return value

    def lecun(self, scale: float = 1.0):
        """N(0, scale / fan_in), fan_in = prod(shape[:-1]) (Linear and HWIO conv kernels)."""

        def init(key, shape, dtype=jnp.float32):
            del key
            return self._take(shape, math.sqrt(scale / max(1, math.prod(shape[:-1]))))

        return init

    def normal(self, shape, std: float = 1.0):
        return self._take(shape, std)

    def fill(self, key: jax.Array) -> None:
        """Write the random values in place (the nnx.Params hold these very arrays; the
        tests check that kernels come out non-zero, should nnx ever copy them)."""
        sizes = [a.size for a, _ in self.requests]
        noise = np.asarray(jax.random.normal(key, (max(1, sum(sizes)),), jnp.float32))
        offset = 0
        for (array, std), n in zip(self.requests, sizes, strict=True):
            array[...] = noise[offset : offset + n].reshape(array.shape) * np.float32(std)
            offset += n


class _NoKeys:
    """Stand-in for nnx.Rngs in layer constructors: our initialisers ignore the key, and
    nnx.Rngs would dispatch two eager JAX ops per parameter (about 1 s per model)."""

    def params(self):
        return None


def norm_groups(ch: int, max_groups: int) -> int:
    """Largest divisor of ch that is <= max_groups and leaves >= 4 channels per group
    (when ch >= 4): 128 → 32, 64 → 16, 48 → 12, 16 → 4, 12 → 3, 3 → 1. One channel per
    group would make GroupNorm an InstanceNorm that erases per-channel conditioning."""
    cap = max(1, min(max_groups, ch // 4))
    return max(d for d in range(1, cap + 1) if ch % d == 0)


class GroupNorm(nnx.Module):
    """GroupNorm over (H, W, channels of a group) of an NHWC array, two-pass variance.

    y = (x - mean_g) / sqrt(var_g + eps) * scale + bias. Same maths as nnx.GroupNorm,
    but the per-group statistics are taken from per-channel means with a tiny (C, G)
    matmul: reductions over the minor channel axis in groups are slow on XLA:CPU
    (measured 3x faster fwd+bwd at 8×8×64, batch 64).
    """

    def __init__(self, ch: int, num_groups: int, epsilon: float = 1e-6):
        if ch % num_groups:
            raise ValueError(f"GroupNorm: {num_groups} groups do not divide {ch} channels")
        self.num_groups = num_groups
        self.epsilon = epsilon
        self.scale = nnx.Param(_ones_init(None, (ch,)))
        self.bias = nnx.Param(_zeros_init(None, (ch,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        ch = x.shape[-1]
        size = ch // self.num_groups
        eye = np.eye(self.num_groups, dtype=np.float32)
        to_groups = jnp.asarray(np.kron(eye, np.full((size, 1), 1.0 / size, np.float32)))
        to_channels = jnp.asarray(np.kron(eye, np.ones((1, size), np.float32)))
        axes = tuple(range(1, x.ndim - 1))
        shape = (x.shape[0],) + (1,) * len(axes) + (ch,)

        def group_mean(v):  # (B, C) per-channel means -> their group means, (B, 1, 1, C)
            return ((v @ to_groups) @ to_channels).reshape(shape)

        xc = x - group_mean(jnp.mean(x, axis=axes))
        inv = jax.lax.rsqrt(group_mean(jnp.mean(jnp.square(xc), axis=axes)) + self.epsilon)
        return xc * (inv * self.scale[...]) + self.bias[...]


def _norm(ch: int, max_groups: int, rngs) -> GroupNorm:
    del rngs
    return GroupNorm(ch, norm_groups(ch, max_groups))


def _linear(cin, cout, *, init: NoisePool, rngs, zero: bool = False) -> nnx.Linear:
    kernel_init = _zeros_init if zero else init.lecun()
    return nnx.Linear(cin, cout, kernel_init=kernel_init, bias_init=_zeros_init, rngs=rngs)


def _conv(cin, cout, k, *, init: NoisePool, rngs, zero: bool = False, **kw) -> nnx.Conv:
    kernel_init = _zeros_init if zero else init.lecun()
    return nnx.Conv(
        cin, cout, (k, k), kernel_init=kernel_init, bias_init=_zeros_init, rngs=rngs, **kw
    )


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Transformer / DDPM position embedding of a (B,) array → (B, dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def fourier_features(v: jax.Array, num_fourier: int) -> jax.Array:
    """phi(v) = [v, sin(w_k v), cos(w_k v)], w_k = π 2^(k-1): (..., S) → (..., S(1+2K))."""
    w = math.pi * 2.0 ** (jnp.arange(num_fourier, dtype=jnp.float32) - 1.0)
    args = v[..., None] * w  # (..., S, K)
    feats = jnp.concatenate([v[..., None], jnp.sin(args), jnp.cos(args)], axis=-1)
    return feats.reshape(*v.shape[:-1], v.shape[-1] * (1 + 2 * num_fourier))


def _heads(ch: int, num_heads: int) -> int:
    """Largest head count ≤ num_heads dividing ch (gcd keeps any width legal)."""
    return math.gcd(ch, num_heads)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, num_heads: int) -> jax.Array:
    """Multi-head softmax attention, q: (B, N, C), k/v: (B, M, C) → (B, N, C)."""
    b, n, c = q.shape
    m = k.shape[1]
    hd = c // num_heads
    q = q.reshape(b, n, num_heads, hd)
    k = k.reshape(b, m, num_heads, hd)
    v = v.reshape(b, m, num_heads, hd)
    out = jax.nn.dot_product_attention(q, k, v, implementation="xla")
    return out.reshape(b, n, c)


class ResBlock(nnx.Module):
    """h = conv1(SiLU(GN1(x))); with scale_shift_norm (a, b) = W SiLU(emb) and
    h = GN2(h)·(1 + a) + b, else h = GN2(h + W SiLU(emb)); then
    out = (skip(x) + conv2(drop(SiLU(h))))/√2."""

    def __init__(
        self, in_ch, out_ch, emb_dim, dropout, *, index, scale_shift, max_groups, init, rngs
    ):
        kw = dict(init=init, rngs=rngs)
        self.index = index  # static: folded into the dropout key
        self.scale_shift = scale_shift
        self.norm1 = _norm(in_ch, max_groups, rngs)
        self.conv1 = _conv(in_ch, out_ch, 3, **kw)
        self.emb_proj = _linear(emb_dim, (2 if scale_shift else 1) * out_ch, **kw)
        self.norm2 = _norm(out_ch, max_groups, rngs)
        self.dropout = nnx.Dropout(dropout)
        self.conv2 = _conv(out_ch, out_ch, 3, zero=True, **kw)
        self.skip = _conv(in_ch, out_ch, 1, **kw) if in_ch != out_ch else None

    def __call__(self, x, emb, *, train: bool, rng):
        h = self.conv1(nnx.silu(self.norm1(x)))
        e = self.emb_proj(nnx.silu(emb))[:, None, None, :]
        if self.scale_shift:
            scale, shift = jnp.split(e, 2, axis=-1)
            h = self.norm2(h) * (1.0 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = nnx.silu(h)
        if train and self.dropout.rate > 0:
            h = self.dropout(h, deterministic=False, rngs=jax.random.fold_in(rng, self.index))
        h = self.conv2(h)
        skip = x if self.skip is None else self.skip(x)
        return (skip + h) * _INV_SQRT2


class SelfAttention(nnx.Module):
    """Self-attention over the H·W positions; out = (x + W_o attn(GN(x)))/√2."""

    def __init__(self, ch, num_heads, *, max_groups, init, rngs):
        self.num_heads = _heads(ch, num_heads)
        self.norm = _norm(ch, max_groups, rngs)
        self.qkv = _linear(ch, 3 * ch, init=init, rngs=rngs)
        self.out = _linear(ch, ch, zero=True, init=init, rngs=rngs)

    def __call__(self, x):
        b, hh, ww, c = x.shape
        h = self.norm(x).reshape(b, hh * ww, c)
        q, k, v = jnp.split(self.qkv(h), 3, axis=-1)
        h = self.out(_attend(q, k, v, self.num_heads)).reshape(b, hh, ww, c)
        return (x + h) * _INV_SQRT2


class CrossAttention(nnx.Module):
    """Queries from the feature map (H·W), keys/values from the G γ-tokens."""

    def __init__(self, ch, token_dim, num_heads, *, max_groups, init, rngs):
        self.num_heads = _heads(ch, num_heads)
        self.norm = _norm(ch, max_groups, rngs)
        self.token_norm = nnx.LayerNorm(
            token_dim, scale_init=_ones_init, bias_init=_zeros_init, rngs=rngs
        )
        self.q = _linear(ch, ch, init=init, rngs=rngs)
        self.kv = _linear(token_dim, 2 * ch, init=init, rngs=rngs)
        self.out = _linear(ch, ch, zero=True, init=init, rngs=rngs)

    def __call__(self, x, tokens):
        b, hh, ww, c = x.shape
        q = self.q(self.norm(x).reshape(b, hh * ww, c))
        k, v = jnp.split(self.kv(self.token_norm(tokens)), 2, axis=-1)
        h = self.out(_attend(q, k, v, self.num_heads)).reshape(b, hh, ww, c)
        return (x + h) * _INV_SQRT2


class Downsample(nnx.Module):
    def __init__(self, ch, *, init, rngs):
        self.conv = _conv(ch, ch, 3, strides=(2, 2), padding=((1, 1), (1, 1)), init=init, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class Upsample(nnx.Module):
    def __init__(self, ch, *, init, rngs):
        self.conv = _conv(ch, ch, 3, init=init, rngs=rngs)

    def __call__(self, x):
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


def validate_config(config, image_shape: Sequence[int], num_groups: int) -> None:
    """One-line ValueErrors for every user-fixable config mistake."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    height, width, _ = image_shape
    ch_mult = tuple(config.ch_mult)
    if not ch_mult or any(int(m) < 1 for m in ch_mult):
        raise ValueError(
            f"config.model.ch_mult must be a non-empty tuple of ints >= 1, got {ch_mult}"
        )
    factor = 2 ** (len(ch_mult) - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"config.model.ch_mult={ch_mult} downsamples by {factor}, which does not divide the "
            f"image size {height}x{width}; use fewer levels"
        )
    if config.conditioning not in CONDITIONINGS:
        raise ValueError(
            f"config.model.conditioning={config.conditioning!r} is not allowed; allowed: "
            + ", ".join(CONDITIONINGS)
        )
    if not isinstance(config.gamma_map_channel, bool):
        raise ValueError(
            "config.model.gamma_map_channel must be True or False, "
            f"got {config.gamma_map_channel!r}"
        )
    for field in ("ch", "num_res_blocks", "token_dim", "num_heads", "emb_mult", "max_norm_groups"):
        if int(config[field]) < 1:
            raise ValueError(f"config.model.{field} must be >= 1, got {config[field]}")
    if int(config.num_fourier) < 0:
        raise ValueError(f"config.model.num_fourier must be >= 0, got {config.num_fourier}")
    if not isinstance(config.get("gaussian_skip", False), bool):
        raise ValueError(
            f"config.model.gaussian_skip must be True or False, got {config.gaussian_skip!r}"
        )
    if not 0.0 <= float(config.dropout) < 1.0:
        raise ValueError(f"config.model.dropout must be in [0, 1), got {config.dropout}")
    if config.conditioning == "gamma" and int(num_groups) < 1:
        raise ValueError(f"conditioning='gamma' needs num_groups >= 1, got {num_groups}")
    resolutions = tuple(height // 2**i for i in range(len(ch_mult)))
    for field in ("attn_resolutions", "cross_attn_resolutions"):
        bad = [r for r in tuple(config[field]) if r not in resolutions]
        if bad:
            raise ValueError(
                f"config.model.{field} has {bad}, not a resolution of this U-Net; allowed: "
                + ", ".join(map(str, resolutions))
            )


class UNet(nnx.Module):
    """The GUD score network; see the module docstring for the maths and shapes."""

    def __init__(
        self,
        config,
        *,
        image_shape: Sequence[int],
        num_groups: int,
        rng: jax.Array | None = None,
    ):
        """Args: config (config.model), image_shape (H, W, C), num_groups G, rng: the init
        key (None: random kernels are left at zero; for shape-only builds)."""
        validate_config(config, image_shape, num_groups)
        init = NoisePool()
        rngs = _NoKeys()
        height, _, channels = image_shape
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_groups = int(num_groups)
        self.conditioning = str(config.conditioning)
        self.gamma_map_channel = bool(config.gamma_map_channel)
        self.gamma_input_scale = float(config.gamma_input_scale)
        self.num_fourier = int(config.num_fourier)
        ch = int(config.ch)
        ch_mult = tuple(int(m) for m in config.ch_mult)
        self.num_levels = len(ch_mult)
        self.num_res_blocks = nrb = int(config.num_res_blocks)
        attn_res = tuple(int(r) for r in config.attn_resolutions)
        cross_res = tuple(int(r) for r in config.cross_attn_resolutions)
        use_cross = self.conditioning == "gamma"
        max_groups = int(config.max_norm_groups)
        heads = int(config.num_heads)
        emb_dim = int(config.emb_mult) * ch
        token_dim = int(config.token_dim)
        dropout = float(config.dropout)
        scale_shift = bool(config.scale_shift_norm)
        # Read by apply_model (a config stored before this field existed has no skip).
        self.gaussian_skip = bool(config.get("gaussian_skip", False))
        norm_kw = dict(max_groups=max_groups, init=init, rngs=rngs)
        kw = dict(init=init, rngs=rngs)

        # Conditioning embeddings.
        if self.conditioning == "gamma":
            n_feat = 3 * (1 + 2 * self.num_fourier)
            self.group_embed = nnx.Param(init.normal((self.num_groups, token_dim)))
            self.token_in = _linear(n_feat, token_dim, **kw)
            self.token_out = _linear(token_dim, token_dim, **kw)
            self.pool_pre = _linear(token_dim, token_dim, **kw)
            self.emb_in = _linear(token_dim, emb_dim, **kw)
        else:
            self.emb_in = _linear(ch, emb_dim, **kw)
        self.emb_out = _linear(emb_dim, emb_dim, **kw)

        in_ch = channels * (2 if self.gamma_map_channel else 1)
        self.conv_in = _conv(in_ch, ch, 3, **kw)

        blocks: dict[str, nnx.Module] = {}
        index = 0

        def res(name, cin, cout):
            nonlocal index
            blocks[name] = ResBlock(
                cin, cout, emb_dim, dropout, index=index, scale_shift=scale_shift, **norm_kw
            )
            index += 1

        # Down path; skip_chs records the channels of every pushed skip tensor.
        skip_chs = [ch]
        cur = ch
        for lvl, mult in enumerate(ch_mult):
            r = height // 2**lvl
            for b in range(nrb):
                res(f"down{lvl}_res{b}", cur, ch * mult)
                cur = ch * mult
                if r in attn_res:
                    blocks[f"down{lvl}_attn{b}"] = SelfAttention(cur, heads, **norm_kw)
                if use_cross and r in cross_res:
                    blocks[f"down{lvl}_cross{b}"] = CrossAttention(cur, token_dim, heads, **norm_kw)
                skip_chs.append(cur)
            if lvl != self.num_levels - 1:
                blocks[f"down{lvl}_downsample"] = Downsample(cur, **kw)
                skip_chs.append(cur)

        # Middle.
        res("mid_res0", cur, cur)
        blocks["mid_attn"] = SelfAttention(cur, heads, **norm_kw)
        if use_cross:
            blocks["mid_cross"] = CrossAttention(cur, token_dim, heads, **norm_kw)
        res("mid_res1", cur, cur)

        # Up path.
        for lvl in reversed(range(self.num_levels)):
            r = height // 2**lvl
            for b in range(nrb + 1):
                res(f"up{lvl}_res{b}", cur + skip_chs.pop(), ch * ch_mult[lvl])
                cur = ch * ch_mult[lvl]
                if r in attn_res:
                    blocks[f"up{lvl}_attn{b}"] = SelfAttention(cur, heads, **norm_kw)
                if use_cross and r in cross_res:
                    blocks[f"up{lvl}_cross{b}"] = CrossAttention(cur, token_dim, heads, **norm_kw)
            if lvl != 0:
                blocks[f"up{lvl}_upsample"] = Upsample(cur, **kw)
        assert not skip_chs

        self.blocks = nnx.Dict(blocks)
        self.norm_out = _norm(cur, max_groups, rngs)
        self.conv_out = _conv(cur, channels, 3, zero=True, **kw)
        if rng is not None:
            init.fill(rng)

    # -- conditioning --------------------------------------------------------------

    def tokens(self, gamma_groups: jax.Array) -> jax.Array:
        """(B, G, 3) γ̃ stats → (B, G, token_dim) tokens e_g + MLP(phi(stats))."""
        feats = fourier_features(gamma_groups * self.gamma_input_scale, self.num_fourier)
        h = self.token_out(nnx.silu(self.token_in(feats)))
        return h + self.group_embed[None]

    def __call__(
        self,
        x: jax.Array,
        *,
        gamma_groups: jax.Array | None = None,
        gamma_map: jax.Array | None = None,
        t: jax.Array | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, self.image_shape))}), got {x.shape}"
            )
        batch = x.shape[0]
        tokens = None
        if self.conditioning == "gamma":
            if gamma_groups is None:
                raise ValueError("conditioning='gamma' needs gamma_groups of shape (B, G, 3)")
            gamma_groups = jnp.asarray(gamma_groups, jnp.float32)
            if gamma_groups.shape != (batch, self.num_groups, 3):
                raise ValueError(
                    f"gamma_groups must have shape ({batch}, {self.num_groups}, 3), "
                    f"got {gamma_groups.shape}"
                )
            tokens = self.tokens(gamma_groups)
            pooled = jnp.mean(nnx.silu(self.pool_pre(tokens)), axis=1)
            emb = self.emb_in(pooled)
        else:
            if t is None:
                raise ValueError("conditioning='t' needs t of shape (B,)")
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
            emb = self.emb_in(sinusoidal_embedding(1000.0 * t, self.emb_in.in_features))
        emb = self.emb_out(nnx.silu(emb))

        if self.gamma_map_channel:
            if gamma_map is None:
                raise ValueError("config.model.gamma_map_channel=True needs gamma_map (B, H, W, C)")
            gamma_map = jnp.asarray(gamma_map, jnp.float32)
            if gamma_map.shape != x.shape:
                raise ValueError(f"gamma_map must have shape {x.shape}, got {gamma_map.shape}")
            x = jnp.concatenate([x, gamma_map * self.gamma_input_scale], axis=-1)

        if (
            train
            and rng is None
            and any(isinstance(m, ResBlock) and m.dropout.rate > 0 for m in self.blocks.values())
        ):
            raise ValueError("train=True with dropout > 0 needs a dropout rng")

        blocks = self.blocks
        kw = dict(train=train, rng=rng)

        def maybe(name, *args):
            return blocks[name](*args) if name in blocks else args[0]

        h = self.conv_in(x)
        skips = [h]
        for lvl in range(self.num_levels):
            for b in range(self.num_res_blocks):
                h = blocks[f"down{lvl}_res{b}"](h, emb, **kw)
                h = maybe(f"down{lvl}_attn{b}", h)
                h = maybe(f"down{lvl}_cross{b}", h, tokens)
                skips.append(h)
            if lvl != self.num_levels - 1:
                h = blocks[f"down{lvl}_downsample"](h)
                skips.append(h)

        h = blocks["mid_res0"](h, emb, **kw)
        h = blocks["mid_attn"](h)
        h = maybe("mid_cross", h, tokens)
        h = blocks["mid_res1"](h, emb, **kw)

        for lvl in reversed(range(self.num_levels)):
            for b in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = blocks[f"up{lvl}_res{b}"](h, emb, **kw)
                h = maybe(f"up{lvl}_attn{b}", h)
                h = maybe(f"up{lvl}_cross{b}", h, tokens)
            if lvl != 0:
                h = blocks[f"up{lvl}_upsample"](h)

        return self.conv_out(nnx.silu(self.norm_out(h)))
