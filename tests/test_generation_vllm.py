"""The vLLM backend against Hugging Face `generate` on one tiny model: the same greedy answers, before
and after the policy's weights change and are synced; seeded samples; and `frugalign online` end to end.
vLLM's CPU build runs these here (`make test` installs it in `.venv-vllm`); without vLLM they skip."""

import json

import pytest
import torch

pytest.importorskip("vllm")

from frugalign.generation import HFGenerator, VLLMGenerator, open_generator  # noqa: E402
from frugalign.models import tiny_causal_lm  # noqa: E402

# vLLM's CPU attention kernels take head sizes of 32 and up: 128 / 2 heads = 64.
SHAPE = dict(hidden_size=128, num_heads=2)
# The first is longer than a KV-cache block (128 tokens on the CPU), so that a prefix cache kept across a
# weight sync would be used, and wrong.
PROMPTS = ["the quick brown fox jumps over the lazy dog. " * 5, "what is 12+30? it is ", "a"]


@pytest.fixture(scope="module")
def policy(tokenizer):
    return tiny_causal_lm(len(tokenizer), seed=3, **SHAPE)


# The tests that use this shared engine come first in the file: closing any other engine (the tests below
# that start their own) tears down vLLM's process-wide parallel state, which this one needs.
@pytest.fixture(scope="module")
def vllm_generator(policy, tokenizer, tmp_path_factory):
    generator = VLLMGenerator(policy, tokenizer, tmp_path_factory.mktemp("vllm"))
    yield generator
    generator.close()


def greedy(generator, prompts=PROMPTS):
    return generator.generate(prompts, 1, 12, 0.0, 1.0, 8, seed=0, progress=False)


def test_greedy_answers_match_hugging_face_before_and_after_a_weight_sync(policy, tokenizer, vllm_generator):
    hf = HFGenerator(policy, tokenizer)
    before = greedy(vllm_generator)
    assert before.token_ids == greedy(hf).token_ids
    with torch.no_grad():  # what a training phase does to the policy
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    assert greedy(vllm_generator).token_ids == before.token_ids  # not synced yet: the old weights
    vllm_generator.sync(policy)
    after = greedy(vllm_generator)
    assert after.token_ids == greedy(hf).token_ids and after.token_ids != before.token_ids
    assert after.num_tokens == sum(len(ids[0]) for ids in after.token_ids)


def test_samples_are_seeded_and_shaped_per_prompt(vllm_generator):
    a = vllm_generator.generate(PROMPTS, 3, 6, 1.0, 0.9, 8, seed=11, progress=False)
    b = vllm_generator.generate(PROMPTS, 3, 6, 1.0, 0.9, 8, seed=11, progress=False)
    assert [len(group) for group in a.texts] == [3, 3, 3] and a.token_ids == b.token_ids
    alone = vllm_generator.generate(PROMPTS[:1], 3, 6, 1.0, 0.9, 8, seed=11, progress=False)
    assert alone.token_ids[0] == a.token_ids[0]  # a prompt's samples do not depend on its neighbours


def test_a_lora_policy_is_synced_with_its_adapter_merged(policy, tokenizer, vllm_generator):
    import copy

    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(copy.deepcopy(policy), LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # an adapter that changes the answers (peft starts B at zero)
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.add_(0.5 * torch.randn_like(p))
    before = [p.clone() for p in lora.parameters()]
    vllm_generator.sync(lora)
    assert greedy(vllm_generator).token_ids == greedy(HFGenerator(lora, tokenizer)).token_ids
    assert greedy(vllm_generator).token_ids != greedy(HFGenerator(policy, tokenizer)).token_ids
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, lora.parameters()))  # the adapter is separate again
    vllm_generator.sync(policy)  # the module's other tests use the plain policy

def test_generation_stops_at_eos_and_keeps_it_like_hugging_face(tokenizer, tmp_path):
    model = tiny_causal_lm(len(tokenizer), seed=4, **SHAPE)
    with torch.no_grad():  # a model that says EOS at once after "ab": only EOS's logit is not 0, and it is > 0
        last = model(torch.tensor([tokenizer("ab")["input_ids"]]), output_hidden_states=True).hidden_states[-1][0, -1]
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.eos_token_id] = last / last.norm()
    hf = greedy(HFGenerator(model, tokenizer), ["ab"])
    generator = VLLMGenerator(model, tokenizer, tmp_path)
    try:
        out = greedy(generator, ["ab"])
    finally:
        generator.close()
    assert out.token_ids == hf.token_ids == [[[tokenizer.eos_token_id]]] and out.texts == [[""]]


def test_auto_picks_hugging_face_without_a_gpu(policy, tokenizer, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine auto picks vLLM")
    assert open_generator("auto", policy, tokenizer, tmp_path).name == "hf"


def test_online_cli_with_vllm_end_to_end_and_resumed(tmp_path, tokenizer, monkeypatch):
    from frugalign.cli import main
    from frugalign.recipes import online
    from tests.recipes.test_online import tiny_reward_model

    model_dir = tmp_path / "policy"
    tiny_causal_lm(len(tokenizer), seed=0, **SHAPE).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rm = tiny_reward_model(tmp_path / "rm", tokenizer)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"say {c}{c}?"}) + "\n" for c in "abcdefgh"))
    out = tmp_path / "online"
    args = ["online", "--model", str(model_dir), "--dataset", str(tmp_path / "p.jsonl"), "--reward-model", str(rm),
            "--output-dir", str(out), "--iterations", "3", "--rho", "0.5", "--max-new-tokens", "6",
            "--batch-size", "4", "--learning-rate", "1e-3", "--generation-backend", "vllm"]

    original = online.train_iteration

    def crash_at_iteration_1(config, policy, tokenizer, pool, t, regenerated):
        if t == 1:
            raise RuntimeError("killed in the training phase")
        return original(config, policy, tokenizer, pool, t, regenerated)

    monkeypatch.setattr(online, "train_iteration", crash_at_iteration_1)
    with pytest.raises(RuntimeError):
        main(args)
    journal_1 = (out / "samples-iter1.jsonl").read_text()
    monkeypatch.setattr(online, "train_iteration", original)
    assert main(args + ["--resume"]) == 0
    assert (out / "samples-iter1.jsonl").read_text() == journal_1  # iteration 1 was not generated again
    records = json.loads((out / "iterations.json").read_text())
    assert [r["generated"] for r in records] == [16, 8, 8]
    assert {r["generation_backend"] for r in records} == {"vllm"}
    assert records[2]["generated_after_resume"] == 8
    trained = type(tiny_causal_lm(len(tokenizer))).from_pretrained(out / "model")
    start = type(trained).from_pretrained(model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), start.parameters()))


def test_rlhf_spin_and_eval_generate_sample_with_vllm(tmp_path, tokenizer, monkeypatch):
    from frugalign.cli import main
    from tests.recipes.test_online import tiny_reward_model

    model_dir = tmp_path / "policy"
    tiny_causal_lm(len(tokenizer), seed=0, **SHAPE).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rm = tiny_reward_model(tmp_path / "rm", tokenizer)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"say {c}{c}?"}) + "\n" for c in "abcdefgh"))
    demos = tmp_path / "d.jsonl"
    demos.write_text("".join(json.dumps({"prompt": f"say {c}{c}?", "completion": f" {c}{c}"}) + "\n" for c in "abcd"))
    syncs = []
    original_sync = VLLMGenerator.sync
    monkeypatch.setattr(VLLMGenerator, "sync", lambda self, policy: (syncs.append(1), original_sync(self, policy)))
    common = ["--model", str(model_dir), "--max-new-tokens", "6", "--batch-size", "4", "--learning-rate", "1e-3",
              "--generation-backend", "vllm"]

    # RLOO is on-policy: the weights go into vLLM before each of its 2 steps (8 prompts, 4 a step), after the start
    assert main(["rlhf", "--dataset", str(prompts), "--reward-model", str(rm), "--samples-per-prompt", "2",
                 "--output-dir", str(tmp_path / "rlhf"), *common]) == 0
    assert len(syncs) == 1 + 2
    syncs.clear()  # with 2 micro-batches a step, once per optimizer step, not per micro-batch
    assert main(["rlhf", "--dataset", str(prompts), "--reward-model", str(rm), "--samples-per-prompt", "2",
                 "--output-dir", str(tmp_path / "rlhf-accumulated"), *common, "--batch-size", "2",
                 "--gradient-accumulation-steps", "2"]) == 0
    assert len(syncs) == 1 + 2
    trained = type(tiny_causal_lm(len(tokenizer))).from_pretrained(tmp_path / "rlhf" / "model")
    start = type(trained).from_pretrained(model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), start.parameters()))

    # SPIN: one engine for the run, given pi_k's weights before iteration k samples its opponents
    syncs.clear()
    assert main(["spin", "--demonstrations", str(demos), "--iterations", "2", "--output-dir", str(tmp_path / "spin"),
                 *common]) == 0
    assert len(syncs) == 1 + 2

    # eval generate: vLLM's greedy answers are Hugging Face's
    for backend in ("hf", "vllm"):
        assert main(["eval", "generate", "--model", str(model_dir), "--prompts", str(prompts), "--chat-template", "off",
                     "--max-new-tokens", "6", "--generation-backend", backend, "--out", str(tmp_path / f"{backend}.jsonl")]) == 0
    hf, vllm = ([json.loads(x)["output"] for x in (tmp_path / f"{b}.jsonl").read_text().splitlines()] for b in ("hf", "vllm"))
    assert hf == vllm and len(hf) == 8

