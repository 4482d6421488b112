"""Reading a Prometheus text exposition back into samples, for the metrics tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

#: (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_exposition(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; KeyError naming what exists when it is missing."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        present = sorted(str(k) for k in samples if k[0] == name)
        raise KeyError(f"no sample {key}; {name} has: {present}")
    return samples[key]


def with_name(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (sample_name, labels), v in samples.items() if sample_name == name}
