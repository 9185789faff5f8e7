"""Golden bytes: what ``Pipeline.parse(spec).encode(...)`` produces must never change.

Published results are reproduced from payloads, so every refactoring of the codecs must keep these
sha256 values (their first 128 bits). They were recorded from the code before the stage-declaration refactoring (commit d83b849; the ``ef``, ``fp16 > ef``, ``uniform > ef`` and
``randk > ef > qsgd`` rows were added later, computed by that same commit's code).
Regenerate only for a deliberate, versioned wire-format change: ``PYTHONPATH=. python tests/codecs/test_golden.py``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedcompress.codecs import Pipeline, decode

SPECS = [
    "identity",
    "fp16",
    "bf16",
    "uniform(4)",
    "uniform(8, stochastic)",
    "uniform(4, block=64)",
    "uniform(4, per_channel)",
    "uniform(1)",
    "uniform(16) > zstd",
    "qsgd(4)",
    "ternary",
    "ternary(stochastic)",
    "sign",
    "kmeans(16)",
    "pq(4, 16)",
    "topk(0.01) > ef > uniform(4) > entropy",
    "topk(0.003) > ef > ternary > entropy",
    "topk(0.05, per_layer) > ef(0.9) > uniform(4, stochastic) > zstd(5)",
    "randk(0.05) > zstd",
    "threshold(0.01)",
    "threshold(0.02) > ef(0.5) > pq(2, 16) > entropy",
    "topk(0.1) > uniform(4) > entropy",
    "topk(0.2) > kmeans(8) > entropy",
    "sign > ef",
    "ef",
    "fp16 > ef > zstd",
    "uniform(4) > ef(0.75) > entropy",
    "randk(0.1) > ef > qsgd(8) > entropy",
    "entropy",
    "fp16 > entropy",
]
STEPS = 3


def update(step: int) -> dict[str, np.ndarray]:
    """Named seeded float32 tensors: heavy-tailed, one large (sampled top-k path), one odd, one scalar."""
    rng = np.random.default_rng(1000 + step)
    shapes = {
        "conv.weight": (16, 3, 3, 3),
        "conv.bias": (16,),
        "fc.weight": (160, 1024),
        "norm": (7,),
        "odd": (5, 3),
        "scalar": (),
    }
    return {k: (rng.standard_t(3, size=s) * 0.01).astype(np.float32) for k, s in shapes.items()}


def _digest_arrays(arrays: dict[str, np.ndarray] | None) -> str | None:
    if arrays is None:
        return None
    h = hashlib.sha256()
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}|{arr.shape}|{arr.dtype}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def run(spec: str) -> list[tuple[str, str, str | None]]:
    """(payload sha256, decoded sha256, new-state sha256) for ``STEPS`` successive encodes."""
    pipe = Pipeline.parse(spec)
    state = None
    out = []
    for step in range(STEPS):
        tensors = update(step)
        res = pipe.encode(tensors, state=state, seed=7919 * step + 3)
        decoded = decode(res.payload)
        out.append(
            (
                hashlib.sha256(res.payload).hexdigest()[:32],
                _digest_arrays(decoded)[:32],
                None if res.state is None else _digest_arrays(res.state)[:32],
            )
        )
        state = res.state
    return out


GOLDEN: dict[str, list[tuple[str, str, str | None]]] = {
    "identity": [
        ("c0a0d2b5d2a47f4eb60bf773f0757bcf", "8dae55956585f29b76d7a45f0ee2b724", None),
        ("45149f796533aa4d89293b91b07f75b8", "5d334848b675921255199fe2d7676e54", None),
        ("927688941f5124f121109b16c341b1df", "46c6d6fc80b144e1268d7a1c00f0e183", None),
    ],
    "fp16": [
        ("c0b4cc081deddc7b4721af0bd41f14b5", "2a5024fbce452523451d3bfa7dc41422", None),
        ("e057eef23742855d1279878428d9cec5", "e9ed0029030bb3d635509f4939c06ebb", None),
        ("2fff16875a088c94353777f57807c69b", "aec32804f0e43cb1c6263cf75e29fa66", None),
    ],
    "bf16": [
        ("3a4f41f4c78b09a0ca795011d81a9397", "134eea66be31032336dddf8789ec7bd8", None),
        ("e23bf2db238d5cc2540e24c7869857e0", "96493d58745ecddd5e375e5a04e2e4f1", None),
        ("11ee84be4824b53ab0dc8da8cbcd7a2d", "0026c7bebac9c59059b366308dc117a8", None),
    ],
    "uniform(4)": [
        ("3cba1cc0cbe0d8eeed94908949c5ce94", "0b5ef2e9e681f63782cb35fb5e3b5a82", None),
        ("d0c7ec2dc9497a6baaa27406136e2be6", "8b81f98be32978738fbc967623c887e6", None),
        ("f51a40dcff7e59520c9380b89a3f2e7f", "278f4902ee063c40d956d945975133cc", None),
    ],
    "uniform(8, stochastic)": [
        ("204baeb93302b2d8faabe65a16d28344", "1132baa2b72d780f93c929ef6dd22ed5", None),
        ("40d02c3dc80d7310890c95308fe18b31", "c3208b980032d1e55ee134b6e5249563", None),
        ("5adb0767fdfbdc66d35f1fc47fe24a5b", "2666f117930215672caed1d73acaa736", None),
    ],
    "uniform(4, block=64)": [
        ("9b1da14dd92450e939b7d76599620ca2", "68bfcc17596916574dff71161912d245", None),
        ("7d77a3456fb6af6aecfe9c9dcdae4ac2", "bf612630d21c7829056a9841d031a182", None),
        ("cd78f9bc11b34c13a0be881a55fe2afc", "ba0fe6eded1317e7d1b341b493a7d61e", None),
    ],
    "uniform(4, per_channel)": [
        ("8a75d787501ba142210965d022d51a6d", "2b86763dec3ef0a07342ae829721c6e3", None),
        ("b7a75ca5a354ef6d89230c9f91f83867", "ea83844b3f5c9b7965fdff4d3cad4e73", None),
        ("36a14793693bba143c95372249321b9a", "81131fcdde5d53a66175e6b7e8e7c2d9", None),
    ],
    "uniform(1)": [
        ("566c75a6013f25a25a5afb7b550c2fbb", "7bd29504fe5764936bf205946aaf397c", None),
        ("c790745105f8207e63d8b66b776a6eed", "eb4718a45ea8118131ceda1cc1560f52", None),
        ("63fc266b7df664827cba79953b6bc9b9", "1d74e09eb0907de7eca88211b92414dc", None),
    ],
    "uniform(16) > zstd": [
        ("9d7c3b78fac7b367f70c2e889587559a", "230d5659d2d415fbf66cd89f35980bed", None),
        ("dbc7abcd8bf12c64f3978ad877555810", "62232e01371b1cad9442e96b06bfc044", None),
        ("f0c0535115bb83cdcd61a3da95db7753", "1db1e603a93d4c5dda62e802f35c257d", None),
    ],
    "qsgd(4)": [
        ("6bb4b081921f79a1057f9d9288c0a800", "0416171e9ae171bc5ccc218839ba853c", None),
        ("d60b6aeecd8ad796d9053b1df52d0c6f", "b0c2a4a206b4bda4ea197a4a4a57ab15", None),
        ("1da182531982f6f607943cd6865f34d6", "29d8b42ffab4e84621e621ce83c112dc", None),
    ],
    "ternary": [
        ("6913871eabfd4560cb397757eab62a15", "2565b61c2b14d794800ad6fec3eb753a", None),
        ("1fc990eca772a7d91c070da023361c9e", "d0b75aad3d2bee4ff69c8852c5e43126", None),
        ("4fd88c3f6ea94660aa4c27e44c8fff8b", "1c2669acf0b928e931e1a118864fdc0e", None),
    ],
    "ternary(stochastic)": [
        ("bb18e77bc58e7a7721c62798a392739c", "46aadddf9269234c8fec606a27c281b0", None),
        ("ec116bf704c72442bd3cf776cafafe0b", "99b169c8ee50723e9c84f6b00445a5ea", None),
        ("0560e3486dfa4ad899a86cacd996ff42", "5b5273125f6a364e9844270169705921", None),
    ],
    "sign": [
        ("bb11a7c9d36fbbedb456f72cd82954dc", "7bd29504fe5764936bf205946aaf397c", None),
        ("91b09de42fccb0b9a33b394433c44fbd", "eb4718a45ea8118131ceda1cc1560f52", None),
        ("79f834eb1409818fe09ac69c3af3180e", "1d74e09eb0907de7eca88211b92414dc", None),
    ],
    "kmeans(16)": [
        ("4878c087bb33d6719944d22366acf147", "68b407c96532915110a61b8200e69fd9", None),
        ("3960cb0af2889e6afdfa637c8a9071bf", "87fe8db94890f78ed685c1cec24b234c", None),
        ("ac8583e51b7d94fdff1913cf69bcad0b", "82be919f611c90afd8641e04918906c3", None),
    ],
    "pq(4, 16)": [
        ("95b2087c483956fb074bc88242db42d1", "6303e6a0022dd010dde916555ee92c6b", None),
        ("dd736dbe305829062556978dff465941", "0a48005da76e08dbeeb49088fd715bb3", None),
        ("392792514af326ffbdd5fe43c690e28c", "25427fefcb04b126797001ddd1baa939", None),
    ],
    "topk(0.01) > ef > uniform(4) > entropy": [
        (
            "0479dad33bab68d0cfea4acc90719208",
            "5d303489b92b696836d2598d0c80892c",
            "fdb400e2606ab34c918970f78232aec4",
        ),
        (
            "39342dc7020e7dd0ba1b37aa7c0173ae",
            "43786794b92ae7479e5c8e4efdab6b6c",
            "55e77e328d0d8bc23828b867471222ec",
        ),
        (
            "229fd96fd46d45a880b3677f39f48046",
            "e9cfd7bf0420c1ac1fd1a6d255579d73",
            "1d11dec67e20c4d1ec79f6b1b9059497",
        ),
    ],
    "topk(0.003) > ef > ternary > entropy": [
        (
            "bcf2e56537841147943b3648cc1b9093",
            "7882abfeeca060e0680c464202334c74",
            "cc7145b80b800360cffae7add6e521cf",
        ),
        (
            "805ef33b51802a1c29111e1e4e8f602a",
            "4bba5eca70cba2e00edac72fb2253f3e",
            "0302884b80a8c57bac33b19bbf5ecfd7",
        ),
        (
            "825baa6ef67ae6fabf6c717d5d0deef6",
            "5b905fffd51c336a562e7171fab046ed",
            "1b3cdf32637c061baffa56c1f7a1f4ec",
        ),
    ],
    "topk(0.05, per_layer) > ef(0.9) > uniform(4, stochastic) > zstd(5)": [
        (
            "a47d5a9b02bf3b0f4b3b273a1805a5e6",
            "2299fb99c0e8d0745c8513a0afc9bf34",
            "81311e27bf8e88e1f219bdb743e74992",
        ),
        (
            "ebd28cbfa75227cc0c3f02f31c17217a",
            "26d5e94236fc63a028720c820ba72258",
            "84e4494de17db6b3cfdcae4933054f72",
        ),
        (
            "0475eb33f74aa51062f1327d5660e2c8",
            "5b40756254754de5689c3e92e7b50021",
            "841fc7a1b52e391f32387b1b672fffb9",
        ),
    ],
    "randk(0.05) > zstd": [
        ("83b774f5f6152704c76db1da517ddba3", "4617a65553f26547d343f4b9ea081f25", None),
        ("d1c0bec9d78da54744e22938e4fa8f7e", "34d613c743e70e13ff349b9e3bf96ebf", None),
        ("2204cf0947a0f5f3729cf981b938cb7b", "9555deb446204de0e246016a6f4ebb62", None),
    ],
    "threshold(0.01)": [
        ("fefd0858c2d41c504cb1d488f7119d7b", "6b85b1ccaf00482ba29555a96833b008", None),
        ("fa8839b9ddaf00859f7b31404a9e08db", "c0584bdd3a1c3e82916345d48b93d51f", None),
        ("775e6cefff6f48408eddd2b0c072b322", "be98dbc73565a665f16c17295fecee93", None),
    ],
    "threshold(0.02) > ef(0.5) > pq(2, 16) > entropy": [
        (
            "e54d50736514142ee14d7f91d9b6620d",
            "adb4593ce73df7396d7b0d5a5e48d176",
            "d8be313f4c9be3475911a302ac5cfaf0",
        ),
        (
            "ab4f416d09ee7f2b0f99ba28fb9af80b",
            "b986b2803de9657d0ec8a4e02a189eed",
            "4d333dd6c007efa7accb331ee8aacca0",
        ),
        (
            "e257c13b1ed56c4461c873d80b67dbba",
            "a8d68e1ff8f39a6c437f50c745902f6a",
            "b2cd8ebbae09f5fcb576c598a8c7f77e",
        ),
    ],
    "topk(0.1) > uniform(4) > entropy": [
        ("3d5d4ecdf54762f900f877be5bbd2d77", "c2150cb6ac8b949c93bff49ea7329631", None),
        ("e6ffbbfce412715c50f1b6d1f29254db", "1e06822397d25e4de3d57db98314b912", None),
        ("c0fe626f8b85231863b656bace3652c2", "2e13c641c096d5cfe303c7466f10b150", None),
    ],
    "topk(0.2) > kmeans(8) > entropy": [
        ("8b3bd4befeb87199cb259d6df9896625", "15e23d68d201b7d8bea350f6bb6849f1", None),
        ("f584b91d7c7308c5d2585bdd0b7c2695", "a129fd47ed6793ea4b3135dfb71e34c9", None),
        ("0a19ec6237713aa6e31c05e43df1ba88", "a0dd72539fdbf7c0f799d0b57ee1a959", None),
    ],
    "sign > ef": [
        (
            "9f6a4545519fb8ab1df7f0f3bd1ff95b",
            "7bd29504fe5764936bf205946aaf397c",
            "4a24f384f78965dce284a50c191bde31",
        ),
        (
            "0cf1f5ddfd6615314da7f8ab753abf9f",
            "f40e022cf6254042a435b5b536b8f2da",
            "d4c532a30d4d44c2e5a8dac18caa7b27",
        ),
        (
            "1a8d5a34f76856523634ad7699409fa0",
            "a38e2a681b15ea1e71da749bf4eb9dfa",
            "697f9c50addc2cfeb3e61688ad0c431a",
        ),
    ],
    "ef": [
        (
            "2e91663719c2e9bb4efa89246e5de797",
            "8dae55956585f29b76d7a45f0ee2b724",
            "e11b52e0c19ceba9719d8c79974e1595",
        ),
        (
            "30d19129ce92b84997b8f32634147ac6",
            "5d334848b675921255199fe2d7676e54",
            "e11b52e0c19ceba9719d8c79974e1595",
        ),
        (
            "1ebbba45da6b6d35f490fb707a6f5242",
            "46c6d6fc80b144e1268d7a1c00f0e183",
            "e11b52e0c19ceba9719d8c79974e1595",
        ),
    ],
    "fp16 > ef > zstd": [
        (
            "ca720485fbcee01a3bfeead53da3d286",
            "2a5024fbce452523451d3bfa7dc41422",
            "b092ff5702fae4fcb6a035c872296487",
        ),
        (
            "fa5dc297eaa4e4fe52e540771cb15988",
            "ebb2f9c3ea64bc2f9d1cdc85d730895b",
            "56432c5ab5f9233998b091bd0a971ec8",
        ),
        (
            "16a3691be2bcb7d4a9735b5a30fa7306",
            "b5726e743adb15c7885eeb65ed95041c",
            "9c5bbf19704dd873aca9c6af284c35bd",
        ),
    ],
    "uniform(4) > ef(0.75) > entropy": [
        (
            "a69811f0cb4673a55673564884ee8608",
            "0b5ef2e9e681f63782cb35fb5e3b5a82",
            "3352836ed715b476b97f69fde7fa21d0",
        ),
        (
            "f6bbcc996713786569ee5fee8d3c3a6f",
            "d98a399eeccb030ac5e96c5c64ea7abe",
            "61e8359b0fdc7846b75b2a4114c8a840",
        ),
        (
            "0e421b260c82a06f022b06273503c688",
            "bd8fdfc9422d0f3f8262b63b0dcae378",
            "021906175cb0ff9e2fe2b32685774d21",
        ),
    ],
    "randk(0.1) > ef > qsgd(8) > entropy": [
        (
            "7ced01d25ffbb8ff4d932542242ec165",
            "6bf3bc45ba6047a22bd749176f31d5d8",
            "fce6fbda8eaf859c4b2df93e3508d068",
        ),
        (
            "5527a80cab39d04be36964917ef829ad",
            "bd72ac648ded87294468508e409d1db7",
            "21d58fbe9d013c22450d52018efe01c9",
        ),
        (
            "25388f7e6f35a340c951c673b55d4e18",
            "794a091593d0ab255df0d5ef2155a0ba",
            "3bee920e2b3cecdc59bb994b284b7af6",
        ),
    ],
    "entropy": [
        ("d7fd665a75bdb798de562ce11aabd0a8", "8dae55956585f29b76d7a45f0ee2b724", None),
        ("9eadf33f0d8fb5f9aa2e3c1c25b466da", "5d334848b675921255199fe2d7676e54", None),
        ("5110758867652a5058db579fe3818756", "46c6d6fc80b144e1268d7a1c00f0e183", None),
    ],
    "fp16 > entropy": [
        ("1616e983c05f6637cec598c8e562e742", "2a5024fbce452523451d3bfa7dc41422", None),
        ("fb8f9dce64745c5d46166833a817aa58", "e9ed0029030bb3d635509f4939c06ebb", None),
        ("a9fe438f9dbb4f64a97016df98c382ee", "aec32804f0e43cb1c6263cf75e29fa66", None),
    ],
}


@pytest.mark.parametrize("spec", SPECS)
def test_golden_bytes(spec: str) -> None:
    assert run(spec) == GOLDEN[spec]


def test_every_registered_stage_is_covered() -> None:
    from fedcompress.codecs import STAGES
    from fedcompress.codecs.spec import parse_spec

    used = {call.name for spec in SPECS for call in parse_spec(spec)}
    assert set(STAGES) - used <= {"raw"}  # raw is the implicit default coder of every spec without one


if __name__ == "__main__":
    print("GOLDEN: dict[str, list[tuple[str, str, str | None]]] = {")
    for spec in SPECS:
        print(f"    {spec!r}: [")
        for row in run(spec):
            print(f"        {row!r},")
        print("    ],")
    print("}")
