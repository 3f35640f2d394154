"""The tweet-aware normalisation options: each transformation, combinations, idempotence, the saved
form (``to_dict`` / model bundle, old bundles without the new keys) and that their tokens reach the
vectorizers' vocabularies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from losslab.data.features import Featurizer
from losslab.data.text import Normalizer, is_laughter

CONF = Path(__file__).resolve().parents[1] / "conf"
NEW = ("repeats", "laughter", "emoji", "hashtags")
ALL = Normalizer(repeats=True, laughter=True, emoji=True, hashtags=True)
TWEETS = [
    "JAJAJAJA @Pepe_MX eres un pendejooooo 😂😂 #NoMásViolencia https://t.co/XyZ",
    "siiiii claro jsjsjs ajajaj hahaha lol xD 🇲🇽❤️ #AMLOPresidente2018 #yo_soy_132",
    "<user> jajajjajaaj hdp 👍🏽 te amo ni modo ️",
    "hijo de su madre, ojo con eso, hoja jefe ja ahí www.ejemplo.com/a  1000 ...",
]


def test_new_options_are_off_by_default_and_leave_text_as_before():
    norm = Normalizer()
    assert not any(getattr(norm, o) for o in NEW)
    assert norm("Siiii JAJAJA 😂 #Hola") == "siiii jajaja 😂 #hola"


@pytest.mark.parametrize(("text", "expected"), [
    ("siiiii claro", "sii claro"),
    ("eres un pendejooooo!!!", "eres un pendejoo!!!"),
    ("noooo mames güeeeey", "noo mames güeey"),
    ("llamar a carro 1000 www", "llamar a carro 1000 ww"),  # doubles and digits untouched
])
def test_repeats_cut_letter_runs_to_two(text, expected):
    assert Normalizer(repeats=True)(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("jajaja que risa", "<laugh> que risa"),
    ("JAJAJA no", "<laugh> no"),
    ("jejeje jiji jsjsjs ajajaj jajajjajaaj", "<laugh> <laugh> <laugh> <laugh> <laugh>"),
    ("hahaha lol xd lmao", "<laugh> <laugh> <laugh> <laugh>"),
    ("jaja, vete a la mierda jaja!", "<laugh>, vete a la mierda <laugh>!"),
])
def test_laughter_becomes_one_token(text, expected):
    assert Normalizer(laughter=True)(text) == expected


@pytest.mark.parametrize("word", ["hijo", "hija", "ojo", "hoja", "jefe", "ja", "ajá", "eso", "ahí", "jose", "mejor",
                                  "joven", "haha1", "user", "jj"])
def test_laughter_leaves_ordinary_spanish_words(word):
    assert not is_laughter(word)
    assert Normalizer(laughter=True)(f"mi {word} hoy") == f"mi {word} hoy"


def test_laughter_spares_the_corpus_tokens():
    assert Normalizer(laughter=True)("<user> jaja <<url>>") == "<user> <laugh> <<url>>"


def test_emoji_become_separate_named_tokens():
    norm = Normalizer(emoji=True)
    assert norm("jaja😂😂gracias") == "jaja <emoji_face_with_tears_of_joy> <emoji_face_with_tears_of_joy> gracias"
    assert norm("viva 🇲🇽!") == "viva <emoji_flag_mx> !"
    assert norm("te quiero ❤️ 👍🏽") == "te quiero <emoji_heavy_black_heart> <emoji_thumbs_up_sign>"
    assert norm("ni modo ️") == "ni modo"  # a variation selector left alone (MEX-A3T has these) is dropped
    assert norm("25° ©2018 ¿qué? ñ") == "25° ©2018 ¿qué? ñ"  # symbols that are not emoji stay


@pytest.mark.parametrize(("text", "expected"), [
    ("#NoMásViolencia ya", "<hashtag> no más violencia ya"),
    ("vamos #AMLOPresidente2018", "vamos <hashtag> amlo presidente 2018"),
    ("#yo_soy_132 marcha", "<hashtag> yo soy 132 marcha"),
    ("#fuerza", "<hashtag> fuerza"),
    ("precio #1 y a#b", "precio <hashtag> 1 y a#b"),
])
def test_hashtags_split_on_camel_case(text, expected):
    assert Normalizer(hashtags=True)(text) == expected


def test_hashtags_keep_case_when_lowercase_is_off():
    assert Normalizer(hashtags=True, lowercase=False)("#NoMásViolencia") == "<hashtag> No Más Violencia"


def test_all_options_together():
    assert ALL(TWEETS[0]) == ("<laugh> <user> eres un pendejoo <emoji_face_with_tears_of_joy> "
                              "<emoji_face_with_tears_of_joy> <hashtag> no más violencia <<url>>")
    assert ALL(TWEETS[1]) == ("sii claro <laugh> <laugh> <laugh> <laugh> <laugh> <emoji_flag_mx> "
                              "<emoji_heavy_black_heart> <hashtag> amlo presidente 2018 <hashtag> yo soy 132")
    assert ALL("jajajaaaaa") == "<laugh>"  # repeats first, then the laugh


@pytest.mark.parametrize("options", [{o: True} for o in NEW] + [{o: True for o in NEW}])
@pytest.mark.parametrize("text", TWEETS)
def test_normalising_twice_changes_nothing(options, text):
    norm = Normalizer(**options)
    once = norm(text)
    assert norm(once) == once


def test_to_dict_round_trips_every_option():
    norm = Normalizer(users=False, repeats=True, emoji=True)
    data = json.loads(json.dumps(norm.to_dict()))
    assert set(data) == {"lowercase", "users", "urls", "whitespace", *NEW}
    assert Normalizer(**data) == norm and Normalizer.from_dict(data) == norm


def test_an_old_bundle_dict_without_the_new_keys_loads_with_them_off():
    old = {"lowercase": True, "users": True, "urls": True, "whitespace": True}
    for norm in (Normalizer(**old), Normalizer.from_dict(old)):
        assert not any(getattr(norm, o) for o in NEW)
        assert norm("siii jaja 😂 #Hola") == "siii jaja 😂 #hola"
    with pytest.raises(ValueError, match="unknown option"):
        Normalizer.from_dict({**old, "stemming": True})


def test_the_model_bundle_keeps_the_options_and_serving_applies_them(tmp_path):
    from losslab.model.network import PReLUMLP
    from losslab.serving.bundle import META_FILE, Predictor, save_bundle

    texts = [ALL(t) for t in TWEETS]
    featurizer = Featurizer.from_config({"weighting": "binary", "word": {"min_df": 1}}).fit(texts)
    net = PReLUMLP(featurizer.vocabulary_size, 2, hidden=4)
    save_bundle(tmp_path, featurizer=featurizer, net=net, class_names=["a", "b"], normalizer=ALL,
                model_params={"hidden": 4}, activation="softmax")
    loaded = Predictor.load(tmp_path)
    assert loaded.normalizer == ALL
    assert loaded.normalizer("siiii JAJA 😂") == "sii <laugh> <emoji_face_with_tears_of_joy>"

    info = json.loads((tmp_path / META_FILE).read_text())  # a bundle written before the options existed
    info["normalizer"] = {k: v for k, v in info["normalizer"].items() if k not in NEW}
    (tmp_path / META_FILE).write_text(json.dumps(info))
    assert Predictor.load(tmp_path).normalizer == Normalizer()


@pytest.mark.parametrize("features", ["onehot", "ngrams"])
def test_option_tokens_survive_the_vectorizers(features):
    cfg = OmegaConf.load(CONF / "features" / f"{features}.yaml")
    cfg.word.min_df = 1
    if cfg.get("char"):
        cfg.char.min_df = 1
    fitted = Featurizer.from_config(cfg).fit([ALL(t) for t in TWEETS])
    words = set(fitted.vectorizers["word"].vocabulary_)
    assert {"<laugh>", "<hashtag>", "<emoji_face_with_tears_of_joy>", "<emoji_flag_mx>", "<user>", "<<url>>"} <= words
    assert {"laugh", "hashtag", "user", "url"}.isdisjoint(words)  # kept whole, not cut to their letters
    if features == "ngrams":
        assert "<lau" in fitted.vectorizers["char"].vocabulary_


def test_both_data_configs_name_every_option():
    mex = OmegaConf.load(CONF / "data" / "mex_a3t.yaml").normalize
    custom = OmegaConf.load(CONF / "data" / "custom.yaml").normalize
    assert set(mex) == set(Normalizer().to_dict())
    assert set(custom) == set(NEW) and not any(custom[o] for o in NEW)  # user datasets: off
    Normalizer.from_dict(dict(mex))
