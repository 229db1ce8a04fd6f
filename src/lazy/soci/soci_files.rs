//! [`SociFiles`]: a SOCI-served layer as the FUSE filesystem sees it, with the recorder
//! of opened files when recording is on (so a SOCI mount's record can become a learned
//! prefetch artifact like an eStargz mount's).

use futures::future::BoxFuture;

use super::SociLayer;
use crate::lazy::fs::LayerContent;
use crate::lazy::producers::record::Recorder;

pub struct SociFiles {
    pub layer: SociLayer,
    pub recorder: Option<Recorder>,
}

impl LayerContent for SociFiles {
    fn index(&self) -> &estargz::Index {
        self.layer.index()
    }

    fn opened(&self, file: estargz::EntryId) {
        if let Some(recorder) = &self.recorder {
            recorder.opened(self.layer.index(), file);
        }
    }

    fn read(
        &self,
        file: estargz::EntryId,
        offset: u64,
        len: u32,
    ) -> BoxFuture<'static, Result<Vec<u8>, std::io::Error>> {
        self.layer.read(file, offset, len)
    }
}
