"""The three models of the paper in PyTorch, written from the reference, for the side-by-side benchmark.

PyTorch is a benchmark dependency only (`pip install torch==2.13.0`); the package and its tests
never import this file. It computes what vnca computes, written the way a PyTorch user would
(NCHW tensors, `nn.Conv2d`, `nn.ConvTranspose2d`, a Python loop over NCA steps, autograd, Adam
after clipping the gradients' global norm):

- the encoder: five 5x5 convolutions with ELU (strides 1, 2, 2, 2, 2), then a linear layer to the
  mean and log standard deviation of q(z|x);
- the doubling decoder: z on one cell, five rounds of (nearest-neighbour doubling, 8 NCA steps);
  rule 3x3 conv -> residual blocks of 1x1 convs -> zero-initialised 1x1 conv;
- the non-doubling decoder: z in every cell of a 32x32 grid, T NCA steps (T drawn per batch);
  rule 3x3 conv -> ELU -> zero-initialised 1x1 conv; with the pool (half of a batch's rows start
  from stored states, half of those damaged) and, for the laptop recipe, the state penalty;
- the baseline decoder: linear -> 512x2x2 -> four 5x5 transposed convolutions with stride 2 and
  ELU -> a 5x5 transposed convolution to the logits;
- the single-sample ELBO (Bernoulli likelihood, Gaussian KL in closed form) and the
  importance-weighted bound with K samples.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    def __init__(self, latent: int, width: int = 32):
        super().__init__()
        channels = [1] + [width * 2**i for i in range(5)]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 5, stride=s, padding=2)
                                   for a, b, s in zip(channels, channels[1:], (1, 2, 2, 2, 2)))
        self.linear = nn.Linear(4 * channels[-1], 2 * latent)

    def forward(self, x):  # x: (b, 1, 32, 32)
        for conv in self.convs:
            x = F.elu(conv(x))
        return self.linear(x.flatten(1)).chunk(2, dim=1)  # mean, log standard deviation


class Rule(nn.Module):
    """f in s <- s + f(s)."""

    def __init__(self, channels: int, hidden: int, blocks: int, elu_after_perception: bool):
        super().__init__()
        self.perceive = nn.Conv2d(channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(hidden, hidden, 1), nn.ELU(), nn.Conv2d(hidden, hidden, 1))
                                    for _ in range(blocks))
        self.output = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self.elu_after_perception = elu_after_perception

    def forward(self, s):
        h = self.perceive(s)
        if self.elu_after_perception:
            h = F.elu(h)
        for block in self.blocks:
            h = h + block(h)
        return self.output(h)


class DoublingDecoder(nn.Module):
    def __init__(self, latent: int, hidden: int, blocks: int):
        super().__init__()
        self.rule = Rule(latent, hidden, blocks, elu_after_perception=False)

    def forward(self, z):
        s = z[:, :, None, None]
        for _ in range(5):
            s = F.interpolate(s, scale_factor=2, mode="nearest")
            for _ in range(8):
                s = s + self.rule(s)
        return s[:, 0]


class NonDoublingDecoder(nn.Module):
    def __init__(self, latent: int, hidden: int):
        super().__init__()
        self.rule = Rule(latent, hidden, 0, elu_after_perception=True)

    def seed(self, z):
        return z[:, :, None, None].expand(-1, -1, 32, 32)

    def grow(self, s, steps: int):
        for _ in range(steps):
            s = s + self.rule(s)
        return s

    def forward(self, z, steps: int):
        return self.grow(self.seed(z), steps)[:, 0]


class ConvDecoder(nn.Module):
    def __init__(self, latent: int, width: int = 32):
        super().__init__()
        channels = [width * 2**i for i in reversed(range(5))]
        self.linear = nn.Linear(latent, 4 * channels[0])
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(a, b, 5, stride=2, padding=2, output_padding=1)
                                      for a, b in zip(channels, channels[1:]))
        self.to_logits = nn.ConvTranspose2d(channels[-1], 1, 5, padding=2)
        self.top = channels[0]

    def forward(self, z):
        h = self.linear(z).view(-1, self.top, 2, 2)
        for layer in self.upsample:
            h = F.elu(layer(h))
        return self.to_logits(h)[:, 0]


class VAE(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def decode(self, z, steps=None):
        return self.decoder(z) if steps is None else self.decoder(z, steps)


def make(name: str, config) -> VAE:
    """A PyTorch model with the sizes of a vnca model configuration."""
    c = config
    if name == "baseline":
        return VAE(Encoder(c.latent, c.encoder_width), ConvDecoder(c.latent, c.decoder_width))
    if name == "doubling":
        return VAE(Encoder(c.latent, c.encoder_width), DoublingDecoder(c.latent, c.hidden, c.residual_blocks))
    return VAE(Encoder(c.latent, c.encoder_width), NonDoublingDecoder(c.latent, c.hidden))


def log_likelihood(logits, x):
    """log p(x | logits), summed over the pixels of each image."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2))


def kl(mean, log_scale):
    return 0.5 * (mean**2 + torch.exp(2 * log_scale) - 1 - 2 * log_scale).sum(1)


def normal_log_density(z, mean=0.0, log_scale=0.0):
    log_scale = torch.as_tensor(log_scale)
    return (-0.5 * ((z - mean) * torch.exp(-log_scale))**2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(1)


def damage(states, generator):
    """Zero a random 16x16 square of each 32x32 state, in every channel."""
    states = states.clone()
    for s in states:
        top, left = torch.randint(0, 17, (2,), generator=generator).tolist()
        s[:, top:top + 16, left:left + 16] = 0
    return states


class Trainer:
    """One training step as a PyTorch user writes it: the batch ELBO, backward, clip, Adam. For the
    non-doubling model: T drawn per batch, and the pool."""

    def __init__(self, name: str, train_config, seed: int = 0, draw_steps=None):
        torch.manual_seed(seed)
        self.name, self.config = name, train_config
        self.draw_steps, self.count = draw_steps, 0  # draw_steps(step) -> T, else drawn here
        self.model = make(name, train_config.model_config)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=train_config.learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        size = train_config.pool_size
        if size:
            latent = train_config.model_config.latent
            self.pool_targets = torch.zeros(size, 32, 32)
            self.pool_states = torch.zeros(size, latent, 32, 32)
            self.pool_filled = torch.zeros(size, dtype=torch.bool)

    def step(self, x):  # x: (b, 32, 32) of 0s and 1s
        c = self.config
        steps = None
        if self.name == "nondoubling":
            m = c.model_config
            steps = (self.draw_steps(self.count) if self.draw_steps else
                     int(torch.randint(m.min_steps, m.max_steps + 1, (), generator=self.generator)))
        self.optimiser.zero_grad(set_to_none=True)
        if not c.pool_size:
            mean, log_scale = self.model.encoder(x[:, None])
            z = mean + torch.exp(log_scale) * torch.randn(mean.shape, generator=self.generator)
            likelihood = log_likelihood(self.model.decode(z, steps), x)
            loss = -(likelihood - kl(mean, log_scale)).mean()
        else:
            loss = self._pooled_loss(x, steps)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_norm)
        self.optimiser.step()
        self.count += 1
        return loss.item()

    def _pooled_loss(self, x, steps):
        c, b = self.config, x.shape[0]
        slots = torch.arange(0, c.pool_size, c.pool_size // b)  # one slot per row, as vnca's pool
        from_pool = (torch.arange(b) % 2 == 1) & self.pool_filled[slots]
        damaged = (torch.arange(b) % 4 == 3) & self.pool_filled[slots]
        targets = torch.where(from_pool[:, None, None], self.pool_targets[slots], x)
        mean, log_scale = self.model.encoder(targets[:, None])
        z = mean + torch.exp(log_scale) * torch.randn(mean.shape, generator=self.generator)
        stored = self.pool_states[slots]
        stored = torch.where(damaged[:, None, None, None], damage(stored, self.generator), stored)
        start = torch.where(from_pool[:, None, None, None], stored, self.model.decoder.seed(z))
        final = self.model.decoder.grow(start, steps)
        loss = -(log_likelihood(final[:, 0], targets) - kl(mean, log_scale)).mean()
        if c.state_penalty:
            loss = loss + c.state_penalty * F.relu(final[:, 1:].abs() - 3).sum((1, 2, 3)).mean()
        with torch.no_grad():  # back into the pool, then shuffle it
            self.pool_targets[slots], self.pool_states[slots] = targets, final.detach()
            self.pool_filled[slots] = True
            order = torch.randperm(c.pool_size, generator=self.generator)
            self.pool_targets, self.pool_states = self.pool_targets[order], self.pool_states[order]
            self.pool_filled = self.pool_filled[order]
        return loss


@torch.no_grad()
def importance_weighted_bound(model: VAE, x, samples: int = 128, chunk: int = 128, steps=None,
                              generator=None):
    """The K-sample bound on log p(x) of one image (32, 32), decoding `chunk` samples at a time."""
    mean, log_scale = model.encoder(x[None, None])
    log_w = []
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        z = mean + torch.exp(log_scale) * torch.randn((n, mean.shape[1]), generator=generator)
        logits = model.decode(z, steps)
        log_w.append(log_likelihood(logits, x.expand(n, -1, -1)) + normal_log_density(z)
                     - normal_log_density(z, mean, log_scale))
    return float(torch.logsumexp(torch.cat(log_w), 0) - math.log(samples))


def _t(array):
    import numpy as np

    return torch.from_numpy(np.array(array, dtype=np.float32))


def _conv(conv: nn.Conv2d, weight, bias):  # vnca: (k, k, c_in, c_out), cross-correlation
    conv.weight.copy_(_t(weight).permute(3, 2, 0, 1))
    conv.bias.copy_(_t(bias))


def _per_cell(conv: nn.Conv2d, layer):  # vnca: (c_in, c_out)
    conv.weight.copy_(_t(layer.weight).T[:, :, None, None])
    conv.bias.copy_(_t(layer.bias))


@torch.no_grad()
def from_vnca(name: str, config, vnca_model) -> VAE:
    """A PyTorch model holding a vnca model's parameters, so the two can be checked equal."""
    model = make(name, config)
    enc, venc = model.encoder, vnca_model.encoder
    for conv, vconv in zip(enc.convs, venc.convs):
        _conv(conv, vconv.weight, vconv.bias)
    top = enc.convs[-1].out_channels  # vnca flattens (y, x, c); PyTorch (c, y, x)
    weight = _t(venc.linear.weight).view(-1, 2, 2, top).permute(0, 3, 1, 2).reshape(-1, 4 * top)
    enc.linear.weight.copy_(weight)
    enc.linear.bias.copy_(_t(venc.linear.bias))
    dec, vdec = model.decoder, vnca_model.decoder
    if name == "baseline":  # vnca reshapes to (2, 2, c); PyTorch to (c, 2, 2)
        dec.linear.weight.copy_(_t(vdec.linear.weight).view(2, 2, dec.top, -1).permute(2, 0, 1, 3).reshape(4 * dec.top, -1))
        dec.linear.bias.copy_(_t(vdec.linear.bias).view(2, 2, dec.top).permute(2, 0, 1).reshape(-1))
        for layer, vlayer in zip([*dec.upsample, dec.to_logits], [*vdec.upsample, vdec.to_logits]):
            # a transposed convolution is the convolution of the dilated input with the flipped kernel
            layer.weight.copy_(_t(vlayer.weight).flip(0, 1).permute(2, 3, 0, 1))
            layer.bias.copy_(_t(vlayer.bias))
        return model
    rule, vrule = dec.rule, vdec.rule
    _conv(rule.perceive, vrule.perceive.weight, vrule.perceive.bias)
    for block, vblock in zip(rule.blocks, vrule.blocks):
        _per_cell(block[0], vblock.inner)
        _per_cell(block[2], vblock.outer)
    _per_cell(rule.output, vrule.output)
    return model


def peak_memory(spec: dict) -> float:
    """PyTorch's side of a row of side_by_side.py, alone in this process (no JAX imported): the row's
    work once to warm up, `repeats` more times; return the peak resident set size in MB."""
    import resource
    from types import SimpleNamespace

    from inputs import images  # benchmarks/inputs.py

    c = spec["config"]
    config = SimpleNamespace(**{**c, "model_config": SimpleNamespace(**c["model_config"])})
    name, draws = spec["model"], spec["draws"]
    if spec["work"] == "train":
        trainer = Trainer(name, config, draw_steps=(lambda step: draws[step]) if draws else None)
        x = torch.from_numpy(images(config.batch_size))
        for _ in range(spec["steps"] * (1 + spec["repeats"])):
            trainer.step(x)
    else:
        model = make(name, config.model_config)
        steps = getattr(config.model_config, "test_steps", None)
        generator = torch.Generator().manual_seed(0)
        for _ in range(1 + spec["repeats"]):
            for image in torch.from_numpy(images(spec["bound_images"], seed=1)):
                importance_weighted_bound(model, image, steps=steps, generator=generator)
    for line in open("/proc/self/status"):  # VmHWM: this program's own peak (see side_by_side.peak_mb)
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="PyTorch's side of a side_by_side.py row, for its memory")
    parser.add_argument("--peak-memory", required=True, metavar="SPEC", help="the row, as JSON (side_by_side.memory)")
    print(json.dumps({"peak_mb": peak_memory(json.loads(parser.parse_args().peak_memory))}))
