"""Personal-fact sessions written from templates: each is a short chat about one person of the user's
life, with three facts (city, job, hobby) and a question on each.

Held out: the first names of test people never appear in training, so a model cannot learn who
lives where; it must read it from the bank. The values (cities, jobs, hobbies) come from closed
lists shared by both splits: what is new at test time is which person has which.

    python -m memagent_evals.mac.synthetic --out /tmp/mac_data   # writes train.jsonl and test.jsonl
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from memagent.mac.train import Document, write_documents

FIRST_NAMES = """Aaron Abigail Adrian Aisha Alice Amara Andre Anika Arjun Astrid Beatrix Bruno Camila Carlos Chiara
Dalia Damian Daria Elena Emeka Emil Esther Farah Felix Freya Gabriel Greta Hana Hector Ines Ivan Jasper Jonas Kai Kamala
Karim Lars Leila Lena Lorenzo Lucia Magnus Maia Malik Marta Mateo Mei Milan Mira Nadia Nico Nora Oskar Petra Priya
Rafael Rosa Ruben Sanjay Sara Selim Sofia Stellan Talia Theo Tomas Ulla Valentina Vera Viktor Wanda Xavier Yara Yusuf
Zara Zofia Idris Linnea Otto Paloma""".split()
SURNAMES = """Abbott Achebe Alvarez Bauer Becker Chen Costa Dalton Dubois Eriksen Fischer Fontaine Garcia Haddad Hansen
Ibsen Ivanova Jensen Kaur Kowalski Larsen Lindqvist Moreau Murphy Nakamura Novak Okafor Olsen Park Pereira Quinn Rossi
Sato Schmidt Silva Svensson Tanaka Torres Varga Vogel Walsh Weber Yilmaz Zhou Kim Meyer Rahman Santos Nilsson
Horvat""".split()
CITIES = """Lisbon Oslo Nairobi Denver Kyoto Seville Montreal Krakow Melbourne Edinburgh Bergen Porto Lyon Dublin Austin
Hamburg Valencia Seattle Vienna Helsinki Toronto Boston Santiago Manila Cairo Prague Munich Naples Tallinn
Geneva""".split()
JOBS = """nurse architect baker pilot teacher plumber chemist journalist dentist carpenter librarian photographer
electrician veterinarian lawyer firefighter translator gardener accountant pharmacist""".split()
HOBBIES = ["pottery", "chess", "rock climbing", "birdwatching", "sailing", "knitting", "salsa dancing", "beekeeping",
           "fencing", "surfing", "woodworking", "origami", "kayaking", "calligraphy", "juggling", "archery"]
RELATIONS = ["friend", "cousin", "colleague", "neighbour", "old classmate", "sister-in-law", "running buddy", "aunt"]

OPENINGS = [
    "I had coffee with my {relation} {name} today.",
    "Let me tell you about my {relation} {name}.",
    "My {relation} {name} called me this morning.",
    "I want you to remember my {relation} {name}.",
]
CITY = ["{first} lives in {city} these days.", "{first} moved to {city} last year.", "{first} is based in {city} now."]
JOB = ["{first} works as a {job}.", "{first} has a job as a {job}.", "By profession {first} is a {job}."]
HOBBY = ["In their free time {first} loves {hobby}.", "{first} has really got into {hobby}.",
         "{first}'s favourite hobby is {hobby}."]
REPLIES = ["That sounds lovely, thanks for telling me about {first}.", "Noted! {first} sounds interesting.",
           "Good to know about {first}."]
QUESTIONS = {
    "city": ["Where does {name} live?", "Which city is {name} in?"],
    "job": ["What does {name} do for a living?", "What is {name}'s job?"],
    "hobby": ["What hobby does {name} enjoy?", "What does {name} like to do in free time?"],
}


def document(rng: random.Random, first: str, surname: str, n: int) -> Document:
    name = f"{first} {surname}"
    facts = {"city": rng.choice(CITIES), "job": rng.choice(JOBS), "hobby": rng.choice(HOBBIES)}
    fill = {"name": name, "first": first, "relation": rng.choice(RELATIONS), **facts}
    sentences = [rng.choice(t).format(**fill) for t in (CITY, JOB, HOBBY)]
    rng.shuffle(sentences)
    user = " ".join([rng.choice(OPENINGS).format(**fill), *sentences])
    text = f"User: {user}\nAssistant: {rng.choice(REPLIES).format(**fill)}"
    qa = tuple((rng.choice(QUESTIONS[k]).format(name=name), v) for k, v in facts.items())
    return Document(f"{first.lower()}-{surname.lower()}-{n}", text, qa)


def split(documents_per_split: dict[str, int], held_out: int = 20, seed: int = 0) -> dict[str, list[Document]]:
    """Documents per split; test people's first names (``held_out`` of them) never occur in training.
    Full names are unique within a split, so a question names exactly one document of any bank."""
    rng = random.Random(seed)
    firsts = rng.sample(FIRST_NAMES, len(FIRST_NAMES))
    pools = {"train": firsts[held_out:], "test": firsts[:held_out]}
    out = {}
    for name, count in documents_per_split.items():
        people = [(f, s) for f in pools[name] for s in SURNAMES]
        if count > len(people):
            raise ValueError(f"{name}: {count} documents asked, only {len(people)} distinct people")
        out[name] = [document(rng, f, s, n) for n, (f, s) in enumerate(rng.sample(people, count))]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=3000, help="training documents")
    parser.add_argument("--test", type=int, default=256, help="test documents (banks of 64 and 256 come from them)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, documents in split({"train": args.train, "test": args.test}, seed=args.seed).items():
        write_documents(documents, args.out / f"{name}.jsonl")
        questions = sum(len(d.qa) for d in documents)
        print(f"{args.out / f'{name}.jsonl'}: {len(documents)} documents, {questions} questions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
