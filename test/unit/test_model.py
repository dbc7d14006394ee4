"""The SegLLM model: shapes, what trains, persistence, and the LLaVA/SAM builders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY_VIT_SAM, demo_config, random_image, tiny_llava_folder, tiny_model

from segllm_ros.model import transforms as T
from segllm_ros.model.builders import from_llava, load_sam_checkpoint
from segllm_ros.model.config import SamConfig, SegLLMConfig
from segllm_ros.model.processing import encode_frame, reference_tokens
from segllm_ros.model.sam import build_sam
from segllm_ros.model.segllm import SegLLMModel
from segllm_training.tabletop import TabletopConfig, generate_dataset
from segllm_training.tabletop.stream import to_sample
from segllm_training.trainer.batch import Sample, SampleRound, collate
from segllm_training.trainer.build import demo_tokenizer
from segllm_training.trainer.losses import LossWeights, forward_batch


def test_config_round_trip(tmp_path):
    cfg = demo_config()
    cfg.save(tmp_path / "config.json")
    assert SegLLMConfig.load(tmp_path / "config.json") == cfg
    with pytest.raises(ValueError, match="unknown SegLLMConfig keys"):
        SegLLMConfig.from_dict({"not_a_field": 1})


def test_frame_features_and_reference_token_shapes():
    model = tiny_model().eval()
    image = random_image(96, 128)
    feats = encode_frame(model, image)
    assert feats.hw == (96, 128)
    hidden = model.llm.get_input_embeddings().embedding_dim
    assert feats.image_tokens.shape == (model.num_image_tokens, hidden)
    emb = model.config.sam.embedding_size
    assert feats.sam_embedding.shape == (1, model.config.sam.prompt_embed_dim, emb, emb)
    masks = torch.zeros(3, 96, 128, dtype=torch.bool)
    masks[:, 10:40, 20:60] = True
    assert reference_tokens(model, T.to_tensor(image), masks).shape == (6, hidden)
    low, iou, plural = model.decode_from_seg(
        feats.sam_embedding, torch.randn(1, hidden), torch.randn(1, hidden), None
    )
    assert low.shape == (1, 1, 4 * emb, 4 * emb) and iou.shape == (1, 1)
    assert plural.shape == (1, 1) and not plural.any()  # a single-slot model answers singular


def test_gradients_reach_trainable_parts_only():
    model = tiny_model(freeze_vision_tower=True, reference_token_dropout=0.0).train()
    samples = [to_sample(c) for c in generate_dataset(3, 2)]
    loss, _ = forward_batch(model, collate(samples, model), LossWeights())
    loss.backward()
    assert all(p.grad is None for p in model.vision_tower.parameters())
    decoder = model.sam.mask_decoder  # single-mask output: SAM's 3 multimask heads stay idle
    for part in (
        model.projector,
        model.mask_projector,
        model.box_encoder,
        model.seg_head,
        model.llm,
        model.sam.image_encoder,
        decoder.transformer,
        decoder.output_upscaling,
        decoder.output_hypernetworks_mlps[0],
        decoder.iou_prediction_head,
    ):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), type(part).__name__
        assert any(float(g.abs().sum()) > 0 for g in grads), type(part).__name__
    assert model.reference_embed.grad is not None


def test_save_and_load_give_identical_outputs(tmp_path):
    model = tiny_model(seed=3).eval()
    model.save_pretrained(tmp_path)
    loaded = SegLLMModel.from_pretrained(tmp_path)
    image = random_image(seed=4)
    a, b = encode_frame(model, image), encode_frame(loaded, image)
    assert torch.equal(a.image_tokens, b.image_tokens)
    assert torch.equal(a.sam_embedding, b.sam_embedding)
    for (name, p), (_, q) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(p, q), name
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()


def test_grown_checkpoint_computes_what_it_did_then_learns_in_its_new_blocks(tmp_path):
    small = demo_config()
    small.sam.cnn_context_layers = 0
    torch.manual_seed(5)
    model = SegLLMModel.build(small, demo_tokenizer(small, TabletopConfig())).eval()
    model.save_pretrained(tmp_path)
    big = demo_config()
    big.sam.cnn_context_layers = 2
    grown = SegLLMModel.grown_from(tmp_path, big)
    assert len(grown.sam.image_encoder.context) == 2
    image = random_image(seed=6)
    a, b = encode_frame(model, image), encode_frame(grown, image)
    assert torch.equal(a.image_tokens, b.image_tokens)
    assert torch.equal(a.sam_embedding, b.sam_embedding)  # new blocks start as the identity
    samples = [to_sample(c) for c in generate_dataset(3, 2)]
    loss, _ = forward_batch(grown.train(), collate(samples, grown), LossWeights())
    loss.backward()
    assert float(grown.sam.image_encoder.context[1].conv2.weight.grad.abs().sum()) > 0

    other = demo_config(num_prompt_tokens=1)
    with pytest.raises(ValueError, match="can only grow CNN context blocks"):
        SegLLMModel.grown_from(tmp_path, other)
    SegLLMModel.from_pretrained(tmp_path)  # unchanged on disk
    grown.save_pretrained(tmp_path / "grown")
    with pytest.raises(ValueError, match="asks for fewer"):
        SegLLMModel.grown_from(tmp_path / "grown", small)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a SegLLM checkpoint"):
        SegLLMModel.from_pretrained(tmp_path)


def test_llava_and_sam_builders_copy_every_weight(tmp_path):
    tokenizer = tiny_model().tokenizer
    llava = tiny_llava_folder(tmp_path / "llava", tokenizer)
    sam_cfg = SamConfig(image_encoder="vit", **TINY_VIT_SAM)
    torch.manual_seed(2)
    official = build_sam(sam_cfg)
    torch.save(official.state_dict(), tmp_path / "sam_tiny.pth")  # the official file layout

    model = from_llava(tmp_path / "llava", tmp_path / "sam_tiny.pth", sam=sam_cfg).eval()
    inner = llava.model
    for name, p in inner.language_model.state_dict().items():
        assert torch.equal(model.llm.get_decoder().state_dict()[name], p), name
    assert torch.equal(model.llm.get_output_embeddings().weight, llava.lm_head.weight)
    for name, p in inner.vision_tower.state_dict().items():
        assert torch.equal(model.vision_tower.state_dict()[name], p), name
    for name, p in inner.multi_modal_projector.state_dict().items():
        assert torch.equal(model.projector.state_dict()[name], p), name
    for name, p in official.state_dict().items():
        assert torch.equal(model.sam.state_dict()[name], p), name
    assert model.config.vision_feature_layer == -2
    # the built model runs a frame end to end
    feats = encode_frame(model, random_image(40, 50))
    assert feats.sam_embedding.shape == (1, 32, 4, 4)


def test_sam_checkpoint_of_another_size_is_rejected(tmp_path):
    model = tiny_model()
    torch.save({"image_encoder.bogus": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit the configured SAM"):
        load_sam_checkpoint(model, tmp_path / "bad.pth")


def test_collate_places_seg_tokens_and_reference_placeholders():
    model = tiny_model()
    mask = np.zeros((64, 64), bool)
    mask[5:20, 5:20] = True
    other = np.zeros((64, 64), bool)
    other[30:50, 30:50] = True
    sample = Sample(
        random_image(64, 64),
        [
            SampleRound("the red circle", [], mask),
            SampleRound("the blue square left of it", [1], other),
        ],
    )
    batch = collate([sample], model)
    ids = batch.input_ids[0]
    assert (ids[batch.seg_pos] == model.seg_token_id).all()
    assert int((ids == model.ref_token_id).sum()) == 2  # mask + box token of round 1
    assert int((ids == model.image_token_id).sum()) == model.num_image_tokens
    assert batch.has_ref.tolist() == [False, True]
    assert batch.ref_masks[0].shape == (1, 64, 64)


def test_round_tokens_locate_the_query_and_match_a_full_tokenisation():
    from segllm_ros.model.template import tokenize_round

    model = tiny_model()
    tok, cfg = model.tokenizer, model.config
    rt = tokenize_round(
        tok,
        cfg,
        "the red circle left of <the output of round 1>",
        cfg.seg_answer,
        1,
        first=False,
        num_image_tokens=model.num_image_tokens,
    )
    start, end = rt.query_span
    words = tok.convert_ids_to_tokens(rt.user_ids[start:end])
    assert words[:2] == ["<ref>", "<ref>"] and words[2:5] == ["the", "red", "circle"]
    assert tok.convert_ids_to_tokens(rt.user_ids[end:]) == ["ASSISTANT", ":"]
    assert rt.answer_ids.count(model.seg_token_id) == 1


def test_turn_pooling_averages_the_query_span_only():
    model = tiny_model()
    mask = np.zeros((64, 64), bool)
    mask[5:20, 5:20] = True
    sample = Sample(
        random_image(64, 64),
        [SampleRound("the red circle", [], mask), SampleRound("it again", [1], mask)],
    )
    batch = collate([sample], model)
    assert torch.allclose(batch.turn_pool.sum(1), torch.ones(2))
    first = batch.turn_pool[0].nonzero().flatten()
    assert model.tokenizer.convert_ids_to_tokens(batch.input_ids[0, first]) == [
        "the",
        "red",
        "circle",
    ]
