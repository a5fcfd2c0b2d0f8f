"""The ADM / guided-diffusion UNet (Dhariwal & Nichol, 2021), re-implemented.

Module and parameter names follow the published checkpoints, so their state dicts load with
``load_state_dict(strict=True)``: ``time_embed``, ``input_blocks``, ``middle_block``,
``output_blocks``, ``out``; residual blocks hold ``in_layers``/``emb_layers``/``out_layers``/
``skip_connection``, attention blocks ``norm``/``qkv``/``proj_out``, resamplers ``op``/``conv``.
Only the 2D variant is provided. Gradient checkpointing and the fp16 torso of the reference
are not reproduced: weights are float32 unless the caller casts the module.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNetModel", "check_state_dict", "from_guided_diffusion", "timestep_embedding"]

NUM_CLASSES = 1000  # ImageNet classes of guided-diffusion's class-conditional models


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) computed in float32 (whatever the module's dtype), cast back to x's."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        y = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return y.to(x.dtype)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[cos(t f_i), sin(t f_i)]``, ``f_i = max_period^(-i/half)``.

    ``t``: (B,) timesteps, float or int. Returns (B, dim) float32 (zero-padded if dim is odd).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 ``conv``.

    (B, C, H, W) -> (B, C, 2H, 2W).
    """

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x if self.conv is None else self.conv(x)


class Downsample(nn.Module):
    """2x downsampling ``op``: strided 3x3 conv, or 2x2 average pooling.

    (B, C, H, W) -> (B, C, H/2, W/2).
    """

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = (
            nn.Conv2d(channels, channels, 3, stride=2, padding=1)
            if use_conv
            else nn.AvgPool2d(2)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding; may resample (up/down).

    With ``use_scale_shift_norm`` the embedding gives (scale, shift) applied after the second
    GroupNorm as ``norm(h) * (1 + scale) + shift``; otherwise it is added before it.
    (B, C_in, H, W), (B, E) -> (B, C_out, H', W').
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        if up:
            self.resample: nn.Module = Upsample(channels, use_conv=False)
        elif down:
            self.resample = Downsample(channels, use_conv=False)
        else:
            self.resample = nn.Identity()
        film = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, film))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        norm_act, conv = self.in_layers[:-1], self.in_layers[-1]
        h = conv(self.resample(norm_act(x)))
        x = self.resample(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, with a residual connection.

    ``qkv`` is a 1x1 Conv1d producing 3C channels. In the legacy order (all published ADM
    checkpoints) they are grouped per head as ``[q_h, k_h, v_h]``; in the new order as
    ``[q, k, v]``, each split into heads. (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, num_heads: int, new_order: bool = False):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.new_order = new_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        heads, ch = self.num_heads, c // self.num_heads
        if self.new_order:
            q, k, v = qkv.reshape(b, 3, heads, ch, -1).unbind(1)
        else:
            q, k, v = qkv.reshape(b, heads, 3, ch, -1).unbind(2)
        # (B, heads, ch, T) -> (B, heads, T, ch) for attention over T positions
        a = F.scaled_dot_product_attention(q.mT, k.mT, v.mT)
        h = self.proj_out(a.mT.reshape(b, c, -1))
        return (x + h).reshape(b, c, *spatial)


class EmbedSequential(nn.Sequential):
    """Sequential container that passes the timestep embedding to its ResBlocks."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModel(nn.Module):
    """ADM UNet predicting (B, out_channels, H, W) from ``model(x, t)``.

    Args:
        in_channels, out_channels: image channels in and out (out = 2 * in with learned sigma;
            then the first ``in_channels`` are epsilon).
        model_channels: base width; level ``i`` has ``channel_mult[i] * model_channels``.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: downsampling factors (1, 2, 4, ...) at which attention is used.
        num_heads / num_head_channels: heads per attention block, or (if not -1) fixed
            channels per head, which takes precedence. ``num_heads_upsample`` (-1: same as
            ``num_heads``) applies to the decoder.
        resblock_updown: resample inside residual blocks instead of with Down/Upsample.
        conv_resample: Down/Upsample use convolutions (when not ``resblock_updown``).
        num_classes: class-conditional with a label embedding when given.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        model_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int] = (),
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        dropout: float = 0.0,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        conv_resample: bool = True,
        use_new_attention_order: bool = False,
        num_classes: int | None = None,
        image_size: int | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.image_size = image_size
        self.num_classes = num_classes
        emb_dim = 4 * model_channels
        heads_down = num_heads
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample

        def res(ch_in: int, ch_out: int, **updown: bool) -> ResBlock:
            return ResBlock(ch_in, emb_dim, ch_out, dropout, use_scale_shift_norm, **updown)

        def attn(ch: int, heads: int) -> AttentionBlock:
            n = heads if num_head_channels == -1 else ch // num_head_channels
            return AttentionBlock(ch, n, use_new_attention_order)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        )
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, heads_down))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_chans.append(ch)
            if level < len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = EmbedSequential(res(ch, ch), attn(ch, heads_down), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, heads_up))
                if level > 0 and i == num_res_blocks:
                    layers.append(
                        res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample)
                    )
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """``x``: (B, in_channels, H, W); ``t``: (B,) or scalar step indices; ``y``: (B,) labels.

        Returns (B, out_channels, H, W) in the dtype of ``x``; the network runs in the dtype
        of its weights. H and W must be divisible by 2^(levels - 1).
        """
        if (y is None) != (self.num_classes is None):
            raise ValueError("class labels y are needed iff the model is class-conditional")
        dtype = self.time_embed[0].weight.dtype
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(dtype))
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h).to(x.dtype)


# guided-diffusion's ``model_and_diffusion_defaults`` (model part), plus ``in_channels``.
GUIDED_DIFFUSION_DEFAULTS: dict[str, Any] = dict(
    image_size=64,
    in_channels=3,
    num_channels=128,
    num_res_blocks=2,
    num_heads=4,
    num_heads_upsample=-1,
    num_head_channels=-1,
    attention_resolutions="16,8",
    channel_mult="",
    dropout=0.0,
    class_cond=False,
    use_checkpoint=False,
    use_scale_shift_norm=True,
    resblock_updown=False,
    use_fp16=False,
    use_new_attention_order=False,
    learn_sigma=False,
)
# Keys of guided-diffusion configs that do not affect the network.
_IGNORED_KEYS = {
    "diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
    "rescale_timesteps", "rescale_learned_sigmas", "sigma_small", "model_path",
}
_DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    320: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def _int_list(value: str | int | Sequence[int]) -> list[int]:
    """``"16,8"``, ``16`` or ``[16, 8]`` -> ``[16, 8]``."""
    if isinstance(value, str):
        return [int(v) for v in value.split(",") if v.strip()]
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _channel_mult(value: str | Sequence[float], image_size: int) -> tuple[float, ...]:
    if isinstance(value, str) and value.strip():
        return tuple(float(v) if "." in v else int(v) for v in value.split(","))
    if isinstance(value, str) or not value:
        if image_size not in _DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size {image_size}; give one")
        return _DEFAULT_CHANNEL_MULT[image_size]
    return tuple(value)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Raise ValueError naming the first parameter that does not fit ``model``.

    The model's names are checked in order (missing, then wrong shape), then the
    state dict's extra names.
    """
    expected = model.state_dict(keep_vars=True)
    for name, param in expected.items():
        if name not in state_dict:
            raise ValueError(f"state_dict is missing parameter {name!r} {tuple(param.shape)}")
        got = tuple(state_dict[name].shape)
        if got != tuple(param.shape):
            raise ValueError(
                f"parameter {name!r} has shape {got} in the state_dict, "
                f"the model expects {tuple(param.shape)}"
            )
    for name in state_dict:
        if name not in expected:
            raise ValueError(f"state_dict has unexpected parameter {name!r}")


def from_guided_diffusion(
    config: Mapping[str, Any], state_dict: Mapping[str, Tensor] | None = None
) -> UNetModel:
    """Build the UNet from guided-diffusion ``create_model`` arguments; optionally load weights.

    Absent keys take guided-diffusion's ``model_and_diffusion_defaults`` (``in_channels`` 3).
    ``attention_resolutions`` are resolutions in pixels (``image_size // value`` is the
    downsampling factor). ``use_fp16`` and ``use_checkpoint`` are accepted and ignored;
    diffusion keys (``noise_schedule``, ...) are ignored. A ``state_dict`` must fit exactly
    (ValueError otherwise); on a meta-device model it is assigned rather than copied.
    """
    unknown = set(config) - set(GUIDED_DIFFUSION_DEFAULTS) - _IGNORED_KEYS
    if unknown:
        raise ValueError(f"unknown guided-diffusion model option(s): {sorted(unknown)}")
    cfg = {**GUIDED_DIFFUSION_DEFAULTS, **config}
    size = int(cfg["image_size"])
    in_ch = int(cfg["in_channels"])
    model = UNetModel(
        in_channels=in_ch,
        out_channels=2 * in_ch if cfg["learn_sigma"] else in_ch,
        model_channels=int(cfg["num_channels"]),
        num_res_blocks=int(cfg["num_res_blocks"]),
        attention_resolutions=[size // r for r in _int_list(cfg["attention_resolutions"])],
        channel_mult=_channel_mult(cfg["channel_mult"], size),
        dropout=float(cfg["dropout"]),
        num_heads=int(cfg["num_heads"]),
        num_head_channels=int(cfg["num_head_channels"]),
        num_heads_upsample=int(cfg["num_heads_upsample"]),
        use_scale_shift_norm=bool(cfg["use_scale_shift_norm"]),
        resblock_updown=bool(cfg["resblock_updown"]),
        use_new_attention_order=bool(cfg["use_new_attention_order"]),
        num_classes=NUM_CLASSES if cfg["class_cond"] else None,
        image_size=size,
    )
    if state_dict is not None:
        check_state_dict(model, state_dict)
        on_meta = any(p.is_meta for p in model.parameters())
        model.load_state_dict(state_dict, strict=True, assign=on_meta)
    return model
