"""Tiny models of the architectures an export must handle, in PyTorch and Keras.

Random weights, tiny sizes: each conversion takes seconds. Token ids index a
vocabulary of ``VOCAB`` (the input specs carry ``0..VOCAB`` so golden inputs stay
in range); attention masks are 0/1 integers (``0..2``) of the same shape as ids.
"""

from __future__ import annotations

from typing import Any

VOCAB = 50
WIDTH = 16
CLASSES = 3

# Input specs (name:dtype:shape[:low..high]) shared by both frameworks' builders.
MLP_INPUTS = ("x:float32:-1x12",)
RNN_INPUTS = (f"ids:int64:-1x-1:0..{VOCAB}",)
ENCODER_INPUTS = (f"ids:int64:-1x-1:0..{VOCAB}", "mask:int64:-1x-1:0..2")


def torch_mlp() -> Any:
    """Two hidden layers over a float feature vector -> ``logits`` [batch, 3]."""
    import torch
    from torch import nn

    class MLP(nn.Module):
        input_specs = MLP_INPUTS
        output_names = ("logits",)

        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, CLASSES)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    torch.manual_seed(0)
    return MLP().eval()


def torch_argmax() -> Any:
    """A linear layer over ``x`` [batch, 4] -> ``{"label": its argmax (int64), "scores"}`` (seeded)."""
    import torch

    class Argmax(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            scores = self.fc(x)
            return {"label": scores.argmax(-1), "scores": scores}

    torch.manual_seed(0)
    return Argmax().eval()


def torch_rnn() -> Any:
    """Embedding + one-layer LSTM over int64 ids [batch, seq] -> ``logits`` from the last hidden state."""
    import torch
    from torch import nn

    class RNNClassifier(nn.Module):
        input_specs = RNN_INPUTS
        output_names = ("logits",)

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, WIDTH)
            self.lstm = nn.LSTM(WIDTH, WIDTH, batch_first=True)
            self.head = nn.Linear(WIDTH, CLASSES)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(self.embed(ids))
            return self.head(hidden[-1])

    torch.manual_seed(0)
    return RNNClassifier().eval()


def torch_gru() -> Any:
    """Embedding + two-layer bidirectional GRU over int64 ids -> ``logits`` from the last step's output."""
    import torch
    from torch import nn

    class GRUClassifier(nn.Module):
        input_specs = RNN_INPUTS
        output_names = ("logits",)

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, WIDTH)
            self.gru = nn.GRU(WIDTH, WIDTH, num_layers=2, batch_first=True, bidirectional=True)
            self.head = nn.Linear(2 * WIDTH, CLASSES)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            output, _ = self.gru(self.embed(ids))
            return self.head(output[:, -1])

    torch.manual_seed(0)
    return GRUClassifier().eval()


def torch_encoder() -> Any:
    """A transformer encoder layer over ids + padding mask -> ``logits`` (masked mean pool) and ``hidden``."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        input_specs = ENCODER_INPUTS
        output_names = ("logits", "hidden")

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, WIDTH)
            self.layer = nn.TransformerEncoderLayer(WIDTH, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
            self.head = nn.Linear(WIDTH, CLASSES)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # position 0 is a CLS token, always attended: no row is fully padded (its softmax would be NaN)
            keep = torch.cat([torch.ones_like(mask[:, :1]), mask[:, 1:]], dim=1).to(torch.float32)
            hidden = self.layer(self.embed(ids), src_key_padding_mask=keep == 0)
            pooled = (hidden * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True)
            return self.head(pooled), hidden

    torch.manual_seed(0)
    return Encoder().eval()


def keras_mlp() -> Any:
    """Two hidden Dense layers over ``x`` [batch, 12] -> ``logits`` [batch, 3]."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((12,), name="x")
    h = keras.layers.Dense(32, activation="relu")(x)
    h = keras.layers.Dense(32, activation="gelu")(h)
    logits = keras.layers.Dense(CLASSES, name="logits")(h)
    return keras.Model(x, logits, name="mlp")


def keras_rnn() -> Any:
    """Embedding + LSTM over int64 ids [batch, seq] (dynamic seq) -> ``logits``."""
    import keras

    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int64", name="ids")
    h = keras.layers.Embedding(VOCAB, WIDTH)(ids)
    h = keras.layers.LSTM(WIDTH, unroll=False)(h)
    logits = keras.layers.Dense(CLASSES, name="logits")(h)
    return keras.Model(ids, logits, name="rnn")


def keras_encoder() -> Any:
    """MultiHeadAttention + LayerNormalization block over ids + mask -> ``logits`` and ``hidden``."""
    import keras
    from keras import layers, ops

    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int64", name="ids")
    mask = keras.Input((None,), dtype="int64", name="mask")
    keep = ops.cast(mask, "float32")
    x = layers.Embedding(VOCAB, WIDTH)(ids)
    attention_mask = ops.cast(ops.expand_dims(mask, 1), "bool")  # [batch, 1 (query), seq (key)]
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=WIDTH // 2)(x, x, attention_mask=attention_mask)
    x = layers.LayerNormalization(epsilon=1e-5)(x + attended)
    ff = layers.Dense(WIDTH)(layers.Dense(32, activation="relu")(x))
    hidden = layers.LayerNormalization(epsilon=1e-5, name="hidden")(x + ff)
    summed = ops.sum(hidden * ops.expand_dims(keep, -1), axis=1)
    pooled = summed / ops.maximum(ops.sum(keep, axis=1, keepdims=True), 1.0)
    logits = layers.Dense(CLASSES, name="logits")(pooled)
    return keras.Model([ids, mask], [logits, hidden], name="encoder")
