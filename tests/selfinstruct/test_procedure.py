"""The self-instruct procedure against a scripted OpenAI-compatible teacher (stdlib, in a thread): every rule fires
on crafted blocks, good tasks are kept, injected 429 / 500 / timeouts lose nothing, a rerun asks nothing."""

import json

import pytest
from scripted_llm import Reply, completion_body

from barbarossa import languages, llm
from barbarossa.data import instructions
from barbarossa.selfinstruct import procedure
from barbarossa.selfinstruct.filters import RULES, Pool
from barbarossa.selfinstruct.plan import plan_requests
from barbarossa.selfinstruct.prompt import build_prompt, parse_response
from barbarossa.selfinstruct.settings import SelfInstruct

AZ = languages.load("az")
SETTINGS = SelfInstruct(target=8, request_budget=6, requests_per_task=2, tasks_per_request=20)
GOOD = [
    ("Yay tətili üçün üç faydalı məsləhət verin.", "", "Çox su için, günəşdən qorunun və hər gün kitab oxuyun."),
    (
        "Azərbaycan mətbəxindən məşhur bir yeməyin reseptini yazın.",
        "",
        "Plov üçün düyü, ət, soğan, yağ və zəfəran lazımdır; düyü ayrıca dəmlənir.",
    ),
    ("Sağlam yuxu üçün nə etmək lazımdır, izah edin.", "", "Hər gün eyni saatda yatın və axşam qəhvə içməyin."),
    ("Verilmiş cümləni daha nəzakətli formada yenidən yazın.", "Qapını bağla.", "Zəhmət olmasa, qapını bağlayın."),
    (
        "Bir şagirdə riyaziyyatı sevdirmək üçün yollar təklif edin.",
        "",
        "Oyunlardan istifadə edin və gündəlik həyatdan misallar çəkin.",
    ),
    (
        "Novruz bayramının əsas adətlərini qısaca təsvir edin.",
        "",
        "Səməni göyərdilir, tonqal qalanır, şəkərbura və paxlava bişirilir.",
    ),
    (
        "Kiçik bir biznes açmaq istəyən şəxsə məsləhətlər verin.",
        "",
        "Bazarı öyrənin, büdcə hazırlayın və müştərilərinizi diqqətlə dinləyin.",
    ),
    (
        "Evdə ətraf mühiti qorumaq üçün görülə biləcək işləri sadalayın.",
        "",
        "Tullantıları çeşidləyin, suya qənaət edin və plastikdən az istifadə edin.",
    ),
    (
        "İki ədədin cəmini tapın və cavabı izah edin.",
        "15 və 27",
        "Cəm 42-dir, çünki on beş üstəgəl iyirmi yeddi qırx ikidir.",
    ),
    (
        "Dostunuza ad günü münasibətilə qısa təbrik məktubu yazın.",
        "",
        "Əziz dostum, ad günün mübarək! Sənə cansağlığı və uğurlar arzulayıram.",
    ),
]


def render(tasks: list[tuple[str, str, str]], first: int) -> str:
    """Tasks as a teacher continues the list: the first block's label is already in the prompt."""
    blocks = []
    for number, (instruction, given, output) in enumerate(tasks, start=first):
        label = "" if number == first else f"{number}. Instruction: "
        blocks.append(f"{label}{instruction}\n{number}. Input:\n{given or '<noinput>'}\n{number}. Output:\n{output}\n")
    return " " + "###\n".join(blocks)


def crafted(seeds: list[dict], held_out: dict) -> str:
    """One response with a block for every rule (the last cut by the token limit) and two good ones."""
    benchmark = next(iter(held_out.values()))[0]
    tasks = [
        GOOD[0],
        ("Qısa yazın.", "", "Yazdım."),  # length
        ("«Vətən» sözünün mənasını izah edin.", "", "Vətən doğulub böyüdüyümüz yerdir."),  # first_char
        ("Bu şəkli diqqətlə təsvir edin.", "", "Şəkildə dəniz və qayıq görünür."),  # blacklist
        ("Bu sual haqqında fikrinizi bildirin, zəhmət olmasa.", "", ""),  # instance
        (seeds[0]["instruction"], seeds[0]["input"], "Başqa bir cavab yazıram burada."),  # duplicate
        (benchmark["instruction"], benchmark["input"], "Cavab budur."),  # contaminated
        ("Write a short story about the sea and a small boat.", "", "Once upon a time the sea was calm."),  # language
        (GOOD[0][0].replace("üç", "dörd"), "", "Gəzin, dincəlin, üzün və dostlarla vaxt keçirin."),  # similar
        GOOD[1],
    ]
    return render(tasks, 4) + "###\nmalformed block without labels\n###\n15. Instruction: Yarımçıq qalan"


def script_teacher(server):
    """The scripted server answering each request by its index (read back from the prompt): request 0 the crafted
    response, each later one three good tasks of its own. Returns the teacher's settings, the seeds, the held-out
    rows."""
    seeds = instructions.load("bundled", language=AZ).records
    held_out = procedure.held_out_rows(AZ)
    prompts = {
        build_prompt(AZ, [seeds[i] for i in r.seeds], SETTINGS.tasks_per_request): r.index
        for r in plan_requests(len(seeds), SETTINGS, 0, SETTINGS.request_budget)
    }

    def answer(path, body):
        index = prompts[body["prompt"]]
        if index == 0:
            return Reply(body=completion_body(crafted(seeds, held_out), "length", 900, 400))
        chosen = GOOD[2 + 3 * (index - 1) : 2 + 3 * index] or GOOD[2:5]
        return Reply(body=completion_body(render(chosen, 4), "stop", 900, 120))

    server.answer = answer
    settings = llm.Teacher(endpoint=server.url, model="scripted-model", timeout_s=1.0, max_retries=4)
    return settings, seeds, held_out


@pytest.fixture
def teacher(scripted_llm):
    return (scripted_llm, *script_teacher(scripted_llm))


def run(settings, seeds, held_out, cache_dir):
    """What the flow does, in one process: the first wave, the ordered filter, the top-up waves."""
    client = llm.connect(settings, cache_dir)
    responses = [r for group in procedure.first_wave(len(seeds), SETTINGS) for r in
                 procedure.ask(client, AZ, seeds, group, SETTINGS)]  # fmt: skip
    pool = Pool(seeds, AZ, SETTINGS, held_out)
    procedure.sift(pool, responses, SETTINGS)
    responses = procedure.top_up(
        pool, responses, lambda requests: procedure.ask(client, AZ, seeds, requests, SETTINGS), SETTINGS, len(seeds)
    )
    return pool, responses


def test_every_rule_fires_on_crafted_blocks_and_good_tasks_reach_the_target(teacher, tmp_path):
    server, settings, seeds, held_out = teacher
    pool, responses = run(settings, seeds, held_out, tmp_path / "cache")
    assert {row["rule"] for row in pool.rejected} == set(RULES)
    assert GOOD[0][0] in [row["instruction"] for row in pool.kept] and len(pool.kept) >= SETTINGS.target
    blocks = sum(len(r["text"].split("###")) for r in responses)
    assert len(pool.kept) + len(pool.rejected) == blocks  # every block ends in exactly one place
    assert [r["request"] for r in responses] == list(range(len(responses))) == sorted({r["request"] for r in responses})
    assert len(server.posts()) == len(responses) <= SETTINGS.request_budget
    summary = {"source": "bundled", "rows": len(seeds), "fingerprint": instructions.fingerprint(seeds)}
    record = procedure.provenance(settings, SETTINGS, AZ, summary, responses, "test/1")
    written = procedure.write_outputs(str(tmp_path / "gen.jsonl"), pool, record)
    assert instructions.load(written["out"]).records == pool.kept  # a valid instruction JSONL, as kept
    rejected = [json.loads(line) for line in (tmp_path / "gen.rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == written["rejected_rows"] == len(pool.rejected)
    provenance = json.loads((tmp_path / "gen.provenance.json").read_text())
    assert provenance["counts"]["kept"] == len(pool.kept) and provenance["usage"]["requests"] == len(responses)
    assert "length" in (tmp_path / "gen.card.md").read_text()


def test_429_500_and_timeouts_are_retried_and_nothing_is_lost(teacher, tmp_path):
    server, settings, seeds, held_out = teacher
    clean, _ = run(settings, seeds, held_out, tmp_path / "clean")
    asked = len(server.requests)
    server.queue(Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}), Reply(500), Reply(delay_s=1.5))
    faulty, responses = run(settings, seeds, held_out, tmp_path / "faulty")
    assert faulty.kept == clean.kept and faulty.rejected == clean.rejected
    assert len(server.posts()) - asked == len(responses) + 3  # each fault cost one more request, no answer lost


def test_a_rerun_with_the_cache_asks_the_teacher_nothing_and_decides_the_same(teacher, tmp_path):
    server, settings, seeds, held_out = teacher
    first, _ = run(settings, seeds, held_out, tmp_path / "cache")
    asked = len(server.posts())
    again, responses = run(settings, seeds, held_out, tmp_path / "cache")
    assert len(server.posts()) == asked and all(r["cached"] for r in responses)
    assert again.kept == first.kept and again.rejected == first.rejected


def test_too_few_seed_tasks_or_nothing_kept_say_so_in_one_line(tmp_path):
    few = tmp_path / "few.jsonl"
    few.write_text(instructions.to_jsonl(instructions.load("bundled", language=AZ).records[:3]), encoding="utf-8")
    with pytest.raises(instructions.DataError, match=r"few.jsonl: 3 seed tasks; self-instruct needs at least 5"):
        procedure.load_seeds(str(few), AZ, SETTINGS)
    empty = Pool([], AZ, SETTINGS)
    empty.consider(parse_response("malformed", 4, "stop")[0])
    record = {"language": "az", "teacher": {"model": "m", "endpoint": "e", "backend": "openai"}, "run": "test/1",
              "seeds": {"rows": 0, "source": "none", "fingerprint": ""}, "usage": procedure.usage([])}  # fmt: skip
    with pytest.raises(instructions.DataError, match=r"no generated task was kept \(format 1\); see .*none.rejected"):
        procedure.write_outputs(str(tmp_path / "none.jsonl"), empty, record)
    assert not (tmp_path / "none.jsonl").exists() and (tmp_path / "none.rejected.jsonl").read_text().count("\n") == 1
