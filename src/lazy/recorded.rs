//! [`Recorded`]: any layer content (an eStargz [`Layer`](crate::lazy::layer::Layer) or a
//! SOCI-served layer) as the FUSE filesystem sees it, telling the recorder which files
//! the workload opens when recording is on, so either kind of mount can become a
//! learned prefetch.

use futures::future::BoxFuture;

use crate::lazy::fs::LayerContent;
use crate::lazy::producers::record::Recorder;

pub struct Recorded<C> {
    pub content: C,
    pub recorder: Option<Recorder>,
}

impl<C: LayerContent> LayerContent for Recorded<C> {
    fn index(&self) -> &estargz::Index {
        self.content.index()
    }

    fn opened(&self, file: estargz::EntryId) {
        if let Some(recorder) = &self.recorder {
            recorder.opened(self.content.index(), file);
        }
    }

    fn read(
        &self,
        file: estargz::EntryId,
        offset: u64,
        len: u32,
    ) -> BoxFuture<'static, Result<Vec<u8>, std::io::Error>> {
        self.content.read(file, offset, len)
    }

    fn backing_file(&self, file: estargz::EntryId) -> BoxFuture<'static, Option<std::fs::File>> {
        self.content.backing_file(file)
    }
}
