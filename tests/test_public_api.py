import memagent


def test_all_lists_exactly_the_public_names_sorted() -> None:
    public = sorted(n for n in vars(memagent) if not n.startswith("_") and n[0].isupper())
    assert memagent.__all__ == sorted(memagent.__all__)
    assert memagent.__all__ == public
