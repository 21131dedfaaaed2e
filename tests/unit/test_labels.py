import pytest

from ser_model.labels import EMOTIONS, LabelParseError, parse_emotion_list, parse_ravdess_name, parse_tess_name


def test_ravdess_name_fields():
    lab = parse_ravdess_name("/x/Actor_07/03-01-05-02-01-02-07.flac")
    assert lab.emotion == "angry"
    assert lab.speaker == "ravdess:07"
    assert lab.extra["intensity"] == "02" and lab.extra["repetition"] == "02"


@pytest.mark.parametrize("code,emotion", [(f"{i + 1:02d}", e) for i, e in enumerate(EMOTIONS)])
def test_ravdess_every_emotion_code(code, emotion):
    assert parse_ravdess_name(f"03-01-{code}-01-01-01-12.wav").emotion == emotion


@pytest.mark.parametrize(
    "name", ["03-01-09-01-01-01-01.wav", "03-01-05-01-01-01.wav", "hello.wav", "03-01-0a-01-01-01-01"]
)
def test_ravdess_rejects_bad_names(name):
    with pytest.raises(LabelParseError):
        parse_ravdess_name(name)


@pytest.mark.parametrize(
    "name,emotion,speaker",
    [
        ("OAF_back_angry.flac", "angry", "tess:OAF"),
        ("YAF_dog_fear.wav", "fearful", "tess:YAF"),
        ("YAF_dog_ps.wav", "surprised", "tess:YAF"),
        ("OAF_bath_neutral.wav", "neutral", "tess:OAF"),
        ("OAF_chalk_disgust.wav", "disgust", "tess:OAF"),
    ],
)
def test_tess_names(name, emotion, speaker):
    lab = parse_tess_name(name)
    assert (lab.emotion, lab.speaker) == (emotion, speaker)


@pytest.mark.parametrize("name", ["OAF_back.wav", "OAF_back_bored.wav", "nounderscore.wav"])
def test_tess_rejects_bad_names(name):
    with pytest.raises(LabelParseError):
        parse_tess_name(name)


def test_emotion_list():
    assert parse_emotion_list("calm, Happy,fearful,disgust") == ("calm", "happy", "fearful", "disgust")
    assert parse_emotion_list("") is None
    with pytest.raises(ValueError):
        parse_emotion_list("calm,calm")
