//! Maps and lists that cost nothing to copy.
//!
//! cel-rust's built-in `map` and `list` copy every element when they are copied, and its
//! interpreter copies a value to own one it only borrows: to bind a comprehension's variable to
//! each element, to join two lists, to bind a variable. For an object as large as a Pod that
//! was most of what a template like the library's `K8sPSPPrivilegedContainer` cost: its
//! containers were copied, field by field, for every list joined and every element visited.
//!
//! [`SharedMap`] and [`SharedList`] hold the built-in value behind an [`Arc`], so a copy is a
//! reference count. To everything else they are the built-in types: [`Val::as_builtin`] hands
//! out the built-in value, so the built-in equality, downcasts and functions see a `map` or a
//! `list` and behave exactly as on one; every operation is the built-in's.

use std::sync::Arc;

use cel::ExecutionError;
use cel::common::traits::{Container, Indexer, Iterable, Iterator, Sizer, Zeroer};
use cel::common::types::{CelInt, CelList, CelMap, Type};
use cel::common::value::{Builtin, BuiltinRef, CowVal, Val};

/// A `map` shared by its copies.
#[derive(Debug, Clone)]
pub(crate) struct SharedMap<'v>(Arc<CelMap<'v>>);

/// A `list` shared by its copies.
#[derive(Debug, Clone)]
pub(crate) struct SharedList<'v>(Arc<CelList<'v>>);

impl<'v> SharedMap<'v> {
    pub(crate) fn new(map: CelMap<'v>) -> Self {
        Self(Arc::new(map))
    }
}

impl<'v> SharedList<'v> {
    pub(crate) fn new(list: CelList<'v>) -> Self {
        Self(Arc::new(list))
    }
}

/// The `Val` methods of a shared value, each the built-in's.
macro_rules! delegate {
    ($shared:ident, $builtin:ident, $variant:ident) => {
        impl<'v> Val for $shared<'v> {
            fn get_type(&self) -> &Type {
                self.0.get_type()
            }

            fn cel_type() -> &'static Type {
                <$builtin<'static> as Val>::cel_type()
            }

            fn as_adder<'b, 'w>(&'b self) -> Option<&'b (dyn cel::common::traits::Adder + 'w)>
            where
                Self: 'w,
            {
                self.0.as_adder()
            }

            fn as_container(&self) -> Option<&dyn Container> {
                self.0.as_container()
            }

            fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
            where
                Self: 'w,
            {
                self.0.as_indexer()
            }

            fn into_indexer<'w>(self: Box<Self>) -> Option<Box<dyn Indexer + 'w>>
            where
                Self: 'w,
            {
                // The interpreter asks a built-in that nothing else refers to for its element
                // by value; a shared one lends it, and the element is copied (cheaply).
                Some(self)
            }

            fn as_iterable<'b, 'w>(&'b self) -> Option<&'b (dyn Iterable + 'w)>
            where
                Self: 'w,
            {
                self.0.as_iterable()
            }

            fn as_sizer(&self) -> Option<&dyn Sizer> {
                self.0.as_sizer()
            }

            fn as_zeroer(&self) -> Option<&dyn Zeroer> {
                self.0.as_zeroer()
            }

            fn equals(&self, other: &dyn Val) -> bool {
                self.0.equals(other)
            }

            fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
            where
                Self: 'w,
            {
                Box::new(self.clone())
            }

            fn as_builtin<'b, 'w>(&'b self) -> BuiltinRef<'b, 'w>
            where
                Self: 'w,
            {
                BuiltinRef::$variant(&*self.0)
            }

            fn into_builtin<'w>(self: Box<Self>) -> Option<Builtin<'w>>
            where
                Self: 'w,
            {
                // The built-in by value: moved out when this is its only copy; otherwise a
                // copy of its top level, whose elements are shared in turn.
                Some(Builtin::$variant(
                    Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone()),
                ))
            }
        }

        impl<'v> Indexer for $shared<'v> {
            fn get<'b, 'w>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
            where
                Self: 'w,
            {
                self.0.get(idx)
            }

            fn steal<'w>(
                self: Box<Self>,
                idx: &dyn Val,
            ) -> Result<Box<dyn Val + 'w>, ExecutionError>
            where
                Self: 'w,
            {
                self.0.get(idx).map(CowVal::into_owned)
            }
        }

        impl<'v> Iterable for $shared<'v> {
            fn iter<'b, 'w>(&'b self) -> Box<dyn Iterator<'b, 'w> + 'b>
            where
                Self: 'w,
            {
                self.0.iter()
            }
        }

        impl Sizer for $shared<'_> {
            fn size(&self) -> CelInt {
                self.0.size()
            }
        }
    };
}

delegate!(SharedMap, CelMap, Map);
delegate!(SharedList, CelList, List);

/// A JSON object of the review as a `map`, converted as it is read: a field read is converted
/// alone, and the whole map only when something needs it whole (iterating it, comparing it,
/// a function taking a `map`). Copies share it, and what it has converted.
#[derive(Debug, Clone)]
pub(crate) struct LazyMap<'v>(
    Arc<Lazy<'v, serde_json::Map<String, serde_json::Value>, CelMap<'v>>>,
);

/// A JSON array of the review as a `list`, converted as it is read (see [`LazyMap`]).
#[derive(Debug, Clone)]
pub(crate) struct LazyList<'v>(Arc<Lazy<'v, Vec<serde_json::Value>, CelList<'v>>>);

#[derive(Debug)]
struct Lazy<'v, J, B> {
    json: &'v J,
    whole: std::sync::OnceLock<B>,
}

impl<'v> LazyMap<'v> {
    pub(crate) fn new(json: &'v serde_json::Map<String, serde_json::Value>) -> Self {
        Self(Arc::new(Lazy {
            json,
            whole: std::sync::OnceLock::new(),
        }))
    }

    fn whole(&self) -> &CelMap<'v> {
        self.0.whole.get_or_init(|| {
            CelMap::from(
                self.0
                    .json
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), super::to_val(v)))
                    .collect::<std::collections::HashMap<_, _>>(),
            )
        })
    }
}

impl<'v> LazyList<'v> {
    pub(crate) fn new(json: &'v Vec<serde_json::Value>) -> Self {
        Self(Arc::new(Lazy {
            json,
            whole: std::sync::OnceLock::new(),
        }))
    }

    fn whole(&self) -> &CelList<'v> {
        self.0.whole.get_or_init(|| {
            CelList::from(self.0.json.iter().map(super::to_val).collect::<Vec<_>>())
        })
    }
}

/// The `Val` methods of a lazy value: its own indexing and size, the rest the whole built-in's.
macro_rules! lazy {
    ($lazy:ident, $builtin:ident, $variant:ident) => {
        impl<'v> Val for $lazy<'v> {
            fn get_type(&self) -> &Type {
                <$builtin<'static> as Val>::cel_type()
            }

            fn cel_type() -> &'static Type {
                <$builtin<'static> as Val>::cel_type()
            }

            fn as_adder<'b, 'w>(&'b self) -> Option<&'b (dyn cel::common::traits::Adder + 'w)>
            where
                Self: 'w,
            {
                self.whole().as_adder()
            }

            fn as_container(&self) -> Option<&dyn Container> {
                self.whole().as_container()
            }

            fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
            where
                Self: 'w,
            {
                Some(self)
            }

            fn into_indexer<'w>(self: Box<Self>) -> Option<Box<dyn Indexer + 'w>>
            where
                Self: 'w,
            {
                Some(self)
            }

            fn as_iterable<'b, 'w>(&'b self) -> Option<&'b (dyn Iterable + 'w)>
            where
                Self: 'w,
            {
                self.whole().as_iterable()
            }

            fn as_sizer(&self) -> Option<&dyn Sizer> {
                Some(self)
            }

            fn as_zeroer(&self) -> Option<&dyn Zeroer> {
                self.whole().as_zeroer()
            }

            fn equals(&self, other: &dyn Val) -> bool {
                self.whole().equals(other)
            }

            fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
            where
                Self: 'w,
            {
                Box::new(self.clone())
            }

            fn as_builtin<'b, 'w>(&'b self) -> BuiltinRef<'b, 'w>
            where
                Self: 'w,
            {
                BuiltinRef::$variant(self.whole())
            }

            fn into_builtin<'w>(self: Box<Self>) -> Option<Builtin<'w>>
            where
                Self: 'w,
            {
                // A copy of the top level; its elements are lazy in turn.
                Some(Builtin::$variant(self.whole().clone()))
            }
        }

        impl Sizer for $lazy<'_> {
            fn size(&self) -> CelInt {
                (self.0.json.len() as i64).into()
            }
        }

        impl<'v> Indexer for $lazy<'v> {
            fn get<'b, 'w>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
            where
                Self: 'w,
            {
                match self.element(idx) {
                    Some(found) => found,
                    None => self.whole().get(idx),
                }
            }

            fn steal<'w>(
                self: Box<Self>,
                idx: &dyn Val,
            ) -> Result<Box<dyn Val + 'w>, ExecutionError>
            where
                Self: 'w,
            {
                self.get(idx).map(CowVal::into_owned)
            }
        }
    };
}

lazy!(LazyMap, CelMap, Map);
lazy!(LazyList, CelList, List);

impl<'v> LazyMap<'v> {
    /// `self[idx]` for a string, converted alone: what the whole map answers, found or not
    /// (`No such key: <key>`); `None` for another key type, which the whole map judges.
    fn element<'b, 'w>(&'b self, idx: &dyn Val) -> Option<Result<CowVal<'b, 'w>, ExecutionError>>
    where
        'v: 'w,
    {
        let key = idx.downcast_ref::<cel::common::types::CelString>()?;
        Some(match self.0.json.get(key.inner()) {
            Some(v) => Ok(CowVal::Owned(super::to_val(v))),
            None => Err(ExecutionError::NoSuchKey(Arc::new(key.inner().to_owned()))),
        })
    }
}

impl<'v> LazyList<'v> {
    /// `self[idx]` for an int in range, converted alone; `None` otherwise, which the whole list
    /// judges (other index types, out of range).
    fn element<'b, 'w>(&'b self, idx: &dyn Val) -> Option<Result<CowVal<'b, 'w>, ExecutionError>>
    where
        'v: 'w,
    {
        let i = *idx.downcast_ref::<CelInt>()?.inner();
        let v = self.0.json.get(usize::try_from(i).ok()?)?;
        Some(Ok(CowVal::Owned(super::to_val(v))))
    }
}
