//! Offset pagination as Elastic Path does it: `page[limit]` (1..=100, default 100)
//! and `page[offset]`.
//!
//! A listing whose history grows without bound (the delivery log) does not count it
//! whole: it counts through the page after the one asked for
//! ([`Page::count_cap`]), so a request reads a bounded number of items whatever the
//! history, and says when its total is only a lower bound ([`Total`]).

/// Largest `page[limit]`.
pub const MAX_LIMIT: usize = 100;

/// Offsets beyond this are refused (no store holds that many of anything).
pub const MAX_OFFSET: usize = 10_000;

/// A requested page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// How many items at most.
    pub limit: usize,
    /// How many items to skip.
    pub offset: usize,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            limit: MAX_LIMIT,
            offset: 0,
        }
    }
}

/// A problem with a pagination parameter: which one, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct PageError {
    /// `page[limit]` or `page[offset]`.
    pub parameter: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl Page {
    /// Parses the raw parameter values (either may be absent).
    pub fn parse(limit: Option<&str>, offset: Option<&str>) -> Result<Self, PageError> {
        let mut page = Page::default();
        if let Some(raw) = limit {
            page.limit = match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(PageError {
                        parameter: "page[limit]",
                        detail: format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    })
                }
            };
        }
        if let Some(raw) = offset {
            page.offset = match raw.parse::<usize>() {
                Ok(n) if n <= MAX_OFFSET => n,
                _ => {
                    return Err(PageError {
                        parameter: "page[offset]",
                        detail: format!("must be a whole number from 0 to {MAX_OFFSET}"),
                    })
                }
            };
        }
        Ok(page)
    }

    /// The items of this page.
    pub fn slice<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect()
    }

    /// How far a listing of a history counts its items: through the page after this
    /// one (`offset + 2 × limit`). A listing that finds this many reports them as
    /// [`Total::lower_bound`]: there may be more.
    pub fn count_cap(&self) -> usize {
        self.offset + 2 * self.limit
    }

    /// The total of a listing that counted `counted` items, stopping at
    /// [`Page::count_cap`]: exact below the cap, a lower bound at it.
    pub fn bounded_total(&self, counted: usize) -> Total {
        let cap = self.count_cap();
        Total {
            count: counted.min(cap),
            lower_bound: counted >= cap,
        }
    }

    /// Numbers for `meta.page` and the links: current page (1-based), total pages
    /// (at least 1), and the offsets of first/prev/next/last. No link goes past
    /// [`MAX_OFFSET`], which would be refused.
    pub fn navigation(&self, total: usize) -> Navigation {
        let pages = total.div_ceil(self.limit).max(1);
        let last_offset = ((pages - 1) * self.limit).min(MAX_OFFSET);
        let next = self.offset + self.limit;
        Navigation {
            current: self.offset / self.limit + 1,
            total_pages: pages,
            first: 0,
            prev: (self.offset > 0).then(|| self.offset.saturating_sub(self.limit)),
            next: (next < total && next <= MAX_OFFSET).then_some(next),
            last: last_offset,
        }
    }
}

/// How many items a listing holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Total {
    /// The count: exact, or (when `lower_bound`) how many there are at least.
    pub count: usize,
    /// Whether there may be more than `count` (the listing stopped counting).
    pub lower_bound: bool,
}

impl Total {
    /// An exact count.
    pub fn exact(count: usize) -> Self {
        Self {
            count,
            lower_bound: false,
        }
    }
}

/// Where a page sits among all pages.
#[derive(Debug, PartialEq, Eq)]
pub struct Navigation {
    /// 1-based number of the current page.
    pub current: usize,
    /// Number of pages (at least 1).
    pub total_pages: usize,
    /// Offset of the first page.
    pub first: usize,
    /// Offset of the previous page, if any.
    pub prev: Option<usize>,
    /// Offset of the next page, if any.
    pub next: Option<usize>,
    /// Offset of the last page.
    pub last: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_page_is_the_first_hundred() {
        assert_eq!(
            Page::parse(None, None),
            Ok(Page {
                limit: 100,
                offset: 0
            })
        );
    }

    #[test]
    fn limit_must_be_between_one_and_a_hundred() {
        assert_eq!(Page::parse(Some("1"), None).map(|p| p.limit), Ok(1));
        assert_eq!(Page::parse(Some("100"), None).map(|p| p.limit), Ok(100));
        for bad in [
            "0",
            "101",
            "-1",
            "abc",
            "",
            "1.5",
            "99999999999999999999999",
        ] {
            let err = Page::parse(Some(bad), None).expect_err(bad);
            assert_eq!(err.parameter, "page[limit]");
        }
    }

    #[test]
    fn offset_must_be_a_whole_number() {
        assert_eq!(Page::parse(None, Some("25")).map(|p| p.offset), Ok(25));
        for bad in ["-1", "x", "10001"] {
            assert_eq!(
                Page::parse(None, Some(bad)).expect_err(bad).parameter,
                "page[offset]"
            );
        }
    }

    #[test]
    fn slicing_takes_limit_items_after_offset() {
        let page = Page {
            limit: 2,
            offset: 3,
        };
        assert_eq!(page.slice((0..10).collect()), vec![3, 4]);
        assert_eq!(
            Page {
                limit: 5,
                offset: 9
            }
            .slice((0..10).collect()),
            vec![9]
        );
        assert!(Page {
            limit: 5,
            offset: 20
        }
        .slice((0..10).collect::<Vec<i32>>())
        .is_empty());
    }

    #[test]
    fn navigation_of_a_middle_page_has_every_link() {
        let nav = Page {
            limit: 10,
            offset: 10,
        }
        .navigation(35);
        assert_eq!(
            nav,
            Navigation {
                current: 2,
                total_pages: 4,
                first: 0,
                prev: Some(0),
                next: Some(20),
                last: 30
            }
        );
    }

    #[test]
    fn navigation_of_an_empty_list_is_one_empty_page() {
        let nav = Page::default().navigation(0);
        assert_eq!(
            (nav.current, nav.total_pages, nav.prev, nav.next, nav.last),
            (1, 1, None, None, 0)
        );
    }

    #[test]
    fn a_total_is_exact_below_the_end_of_the_next_page_and_a_lower_bound_at_it() {
        let page = Page {
            limit: 10,
            offset: 20,
        };
        assert_eq!(page.count_cap(), 40);
        assert_eq!(page.bounded_total(0), Total::exact(0));
        assert_eq!(page.bounded_total(39), Total::exact(39));
        let at_least = Total {
            count: 40,
            lower_bound: true,
        };
        assert_eq!(page.bounded_total(40), at_least);
        assert_eq!(page.bounded_total(41), at_least);
    }

    #[test]
    fn no_link_goes_past_the_largest_offset() {
        let nav = Page {
            limit: 100,
            offset: MAX_OFFSET,
        }
        .navigation(MAX_OFFSET + 200);
        assert_eq!((nav.next, nav.last), (None, MAX_OFFSET));
        let nav = Page {
            limit: 100,
            offset: MAX_OFFSET - 100,
        }
        .navigation(MAX_OFFSET + 100);
        assert_eq!((nav.next, nav.last), (Some(MAX_OFFSET), MAX_OFFSET));
    }

    #[test]
    fn navigation_of_the_last_page_has_no_next() {
        let nav = Page {
            limit: 10,
            offset: 30,
        }
        .navigation(35);
        assert_eq!((nav.current, nav.next, nav.prev), (4, None, Some(20)));
    }
}
