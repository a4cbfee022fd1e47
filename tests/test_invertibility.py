"""CRATE-MAE's encoder and decoder measured in mirrored order (whitebox.invertibility)."""

from __future__ import annotations

import numpy as np
import pytest

import whitebox as wb
from whitebox.crate import CRATEMAE, ViTMAE
from whitebox.invertibility import format_mirrored, mirrored_layers
from whitebox.measure import compression, subspace_bases
from whitebox.tensor import Tensor

ARGS = {"image_size": 8, "patch_size": 4, "channels": 1, "dim": 8, "depth": 3, "heads": 2}


def _model(**kw: object) -> CRATEMAE:
    wb.manual_seed(0)
    return CRATEMAE(**{**ARGS, **kw}).to(dtype=np.float64)


def test_every_number_against_a_hand_written_pass() -> None:
    m = _model()
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8))
    rows = mirrored_layers(m, x, batch_size=3)  # two chunks
    # the encoder's tokens Z^0..Z^D and the decoder's X^0..X^D, layer by layer
    enc = [blk.layers[0] for blk in m.blocks]
    dec = [blk.layers[0] for blk in m.decoder_blocks]
    tokens = m.encode(x)  # norm(Z^D)
    Z = [None] * 4
    with wb.no_grad():
        z = m.patch_embed(Tensor(x))
        z = wb.ops.concat([m.cls_token.expand(4, 1, 8), z], axis=1) + m.decoder_pos_embed
        for i in range(3):
            Z[i] = z.numpy()
            z = enc[i](z)
        X = [tokens.numpy()]
        for j in range(3):
            X.append(dec[j](Tensor(X[-1])).numpy())
    np.testing.assert_allclose(m.norm(z).numpy(), tokens.numpy(), rtol=1e-12)
    for r in rows:
        i, j = r["layer"], r["decoder_layer"]
        assert j == 2 - i
        diff = np.linalg.norm((X[j + 1] - Z[i]).reshape(4, -1), axis=1)
        assert r["distance"] == pytest.approx((diff / np.linalg.norm(Z[i].reshape(4, -1), axis=1)).mean())
        cos = (X[j + 1] * Z[i]).sum(-1) / (np.linalg.norm(X[j + 1], axis=-1) * np.linalg.norm(Z[i], axis=-1))
        assert r["cosine"] == pytest.approx(cos.mean())
        assert r["distance_to"][i] == pytest.approx(r["distance"])
        mssa_in = enc[i][0].norm(Tensor(Z[i])).numpy()
        assert r["enc_compression"] == pytest.approx(
            compression(mssa_in, subspace_bases(enc[i][0].fn)).mean()
        )
        y = dec[j][0](Tensor(X[j]))
        dec_in = dec[j][1].norm(y).numpy()
        assert r["dec_compression"] == pytest.approx(compression(dec_in, subspace_bases(dec[j][1].fn)).mean())
        out = enc[i](Tensor(Z[i])).numpy()
        assert r["enc_sparsity"] == pytest.approx(np.count_nonzero(out) / out.size)
        # ISTA's ReLU zeroes entries; nothing in the decoder does
        assert r["enc_sparsity"] < 1.0 and r["dec_sparsity"] == 1.0
    assert "R^c enc" in format_mirrored(rows) and len(format_mirrored(rows).splitlines()) == 4


def test_a_pass_through_decoder_is_measured_against_the_encoder_input() -> None:
    """A decoder layer that passes its input through (identity dictionary, zero MSSA output).

    With depth 1: X^0 = norm(Z^1); decoder: y = LN(X^0) I = X^0 (LN of an already normalized
    token with unit weight, zero bias is itself up to eps), X^1 = y - 0. So X^1 = norm(Z^1), and
    the distance to Z^0 is ||norm(Z^1) - Z^0|| / ||Z^0||, which a hand pass gives."""
    m = _model(depth=1)
    dec = m.decoder_blocks[0].layers[0]
    dec[0].fn.weight.data = np.eye(8)
    dec[1].fn.to_out[0].weight.data = np.zeros((8, 8))
    dec[1].fn.to_out[0].bias.data = np.zeros(8)
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8))
    (row,) = mirrored_layers(m, x)
    latent = m.encode(x).numpy()
    with wb.no_grad():
        z0 = m.patch_embed(Tensor(x))
        z0 = (wb.ops.concat([m.cls_token.expand(3, 1, 8), z0], axis=1) + m.decoder_pos_embed).numpy()
    expect = np.linalg.norm((latent - z0).reshape(3, -1), axis=1) / np.linalg.norm(z0.reshape(3, -1), axis=1)
    assert row["distance"] == pytest.approx(expect.mean(), rel=1e-4)


def test_bad_models_get_one_clear_error() -> None:
    x = np.zeros((1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"as many layers as the encoder \(3\), got decoder_depth=2"):
        mirrored_layers(_model(decoder_depth=2), x)
    with pytest.raises(TypeError, match="expected a CRATEMAE, got ViTMAE"):
        mirrored_layers(ViTMAE(**ARGS), x)
