"""Every link in the README and docs/, and every docs page (and section) named in a comment of the code, leads to a file
that exists and, where it names a section, to a heading of that page (GitHub's anchors: lower case, punctuation
dropped, spaces to hyphens). Pages get split and headings renamed; a link that silently stops working is lost."""
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(glob.glob('docs/*.md', root_dir=REPO))
CODE = sorted(glob.glob('*.py', root_dir=REPO) + glob.glob('configs/*.py', root_dir=REPO)
              + glob.glob('scripts/*.py', root_dir=REPO) + glob.glob('tests/*.py', root_dir=REPO))


def read(name):
    with open(os.path.join(REPO, name)) as f:
        return f.read()


def anchor(heading):
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(page):
    """The anchors of a page's headings (code blocks left out: a `# comment` there is no heading)."""
    text = re.sub(r'```.*?```', '', read(page), flags=re.S)
    return {anchor(h) for h in re.findall(r'^#+ (.*)$', text, flags=re.M)}


def links():
    """(where, target page relative to the repo, section or '') for every relative link."""
    found = []
    for page in PAGES:
        for link in re.findall(r'\]\(([^)\s]+)\)', read(page)):
            if re.match(r'[a-z]+:', link):
                continue
            path, _, section = link.partition('#')
            target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            found.append((page, target, section))
    for name in CODE:
        for path, section in re.findall(r'\b(docs/[\w]+\.md)(?:#([\w\-]+))?', read(name)):
            found.append((name, path, section))
    return found


def test_links_are_found():
    assert len(links()) > 50 and any(where.startswith('configs/') for where, _, _ in links())


@pytest.mark.parametrize('where, target, section', links())
def test_link_leads_somewhere(where, target, section):
    assert os.path.exists(os.path.join(REPO, target)), f'{where}: {target} does not exist'
    if section and target.endswith('.md'):
        assert section in anchors(target), f'{where}: {target} has no heading for #{section}'


def test_anchor_follows_github():
    assert anchor("Longer segments: the paper's attention at 1M") == 'longer-segments-the-papers-attention-at-1m'
    assert anchor('Retrieval (GCA) and dilated attention on the same task') == \
        'retrieval-gca-and-dilated-attention-on-the-same-task'
