//! A Qdrant server for the tests: Qdrant's gRPC API (the service traits
//! qdrant-client generates from Qdrant's own protos) in front of Qdrant's
//! engine (a Qdrant Edge shard per collection). No Qdrant server can be
//! installed on this machine (no Docker, no binary in the registries), so this
//! is the closest to one: storage and search are Qdrant's, the protocol is
//! Qdrant's, and the calls the backend makes are checked the way the server
//! checks them: an unknown collection is NOT_FOUND, a duplicate one
//! ALREADY_EXISTS, a vector of the wrong size INVALID_ARGUMENT, a wrong
//! `api-key` UNAUTHENTICATED. Only the calls Truffles makes are implemented;
//! the others answer UNIMPLEMENTED.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ::qdrant_client::qdrant::collections_server::{Collections, CollectionsServer};
use ::qdrant_client::qdrant::points_server::{Points, PointsServer};
use ::qdrant_client::qdrant::qdrant_server::{Qdrant, QdrantServer};
use ::qdrant_client::qdrant::*;
use qdrant_edge::{
    Distance as EdgeDistance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, NamedQuery,
    PointInsertOperations, PointOperations, QueryEnum, QueryRequest, ScoringQuery, UpdateOperation,
    WithPayloadInterface, WithVector,
};
use tonic::{Request, Response, Status};

use crate::fakes::lock;

struct Collection {
    shard: Arc<EdgeShard>,
    size: u64,
    distance: i32,
    indexes: BTreeMap<String, i32>,
}

struct State {
    dir: PathBuf,
    api_key: Option<String>,
    collections: HashMap<String, Collection>,
    violations: Vec<String>,
    /// Calls by method name.
    calls: BTreeMap<&'static str, usize>,
}

/// Payload indexes: field and type.
pub type Indexes = Vec<(String, FieldType)>;

/// The server's last handle gone (the test's runtime shutting down): the
/// shards are closed, then their directory goes.
impl Drop for State {
    fn drop(&mut self) {
        self.collections.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone)]
pub struct TestQdrant {
    /// The gRPC endpoint, as `vectorStore.url` names it.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl TestQdrant {
    /// Serves on a free port, storing collections under a new temporary
    /// directory; with `api_key`, every call must carry it.
    pub async fn start(api_key: Option<&str>) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("truffles-qdrant-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let state = Arc::new(Mutex::new(State {
            dir,
            api_key: api_key.map(str::to_owned),
            collections: HashMap::new(),
            violations: Vec::new(),
            calls: BTreeMap::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let service = Service(state.clone());
        let auth = {
            let state = state.clone();
            move |request: Request<()>| -> Result<Request<()>, Status> {
                let wanted = lock(&state).api_key.clone();
                let given = request
                    .metadata()
                    .get("api-key")
                    .and_then(|v| v.to_str().ok());
                match wanted {
                    Some(key) if given != Some(key.as_str()) => {
                        Err(Status::unauthenticated("Invalid api-key"))
                    }
                    _ => Ok(request),
                }
            }
        };
        let router = tonic::transport::Server::builder()
            .add_service(QdrantServer::with_interceptor(
                service.clone(),
                auth.clone(),
            ))
            .add_service(CollectionsServer::with_interceptor(
                service.clone(),
                auth.clone(),
            ))
            .add_service(PointsServer::with_interceptor(service, auth));
        // As Qdrant does: no Nagle delay on small gRPC frames.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(router.serve_with_incoming(incoming));
        Ok(Self {
            url: format!("http://{addr}"),
            state,
        })
    }

    pub fn collections(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.state).collections.keys().cloned().collect();
        names.sort();
        names
    }

    /// The collection's vector size and distance, and its payload indexes.
    pub fn describe(&self, name: &str) -> Option<(u64, Distance, Indexes)> {
        let s = lock(&self.state);
        let c = s.collections.get(name)?;
        Some((
            c.size,
            Distance::try_from(c.distance).unwrap_or(Distance::UnknownDistance),
            c.indexes
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        FieldType::try_from(*v).unwrap_or(FieldType::Keyword),
                    )
                })
                .collect(),
        ))
    }

    pub fn points(&self, name: &str) -> Option<usize> {
        let shard = lock(&self.state).collections.get(name)?.shard.clone();
        shard
            .count(qdrant_edge::CountRequest {
                filter: None,
                exact: true,
            })
            .ok()
    }

    /// Drops a collection behind the runtime's back (a lost collection).
    pub fn lose(&self, name: &str) {
        lock(&self.state).collections.remove(name);
    }

    pub fn calls(&self, method: &str) -> usize {
        lock(&self.state).calls.get(method).copied().unwrap_or(0)
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }
}

#[derive(Clone)]
struct Service(Arc<Mutex<State>>);

fn not_found(name: &str) -> Status {
    Status::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
}

fn edge_point_id(id: Option<PointId>) -> Result<qdrant_edge::PointId, Status> {
    match id.and_then(|i| i.point_id_options) {
        Some(point_id::PointIdOptions::Uuid(u)) => uuid::Uuid::parse_str(&u)
            .map(qdrant_edge::PointId::Uuid)
            .map_err(|_| Status::invalid_argument(format!("Unable to parse UUID: {u}"))),
        Some(point_id::PointIdOptions::Num(n)) => Ok(qdrant_edge::PointId::NumId(n)),
        None => Err(Status::invalid_argument("Point id is required")),
    }
}

fn grpc_point_id(id: qdrant_edge::PointId) -> PointId {
    match id {
        qdrant_edge::PointId::Uuid(u) => u.to_string().into(),
        qdrant_edge::PointId::NumId(n) => n.into(),
    }
}

/// The dense vector of a point (the deprecated `data` field or the `vector` oneof).
#[allow(deprecated)] // older clients send `data`; the server still reads it.
fn dense(vectors: Option<Vectors>) -> Result<Vec<f32>, Status> {
    match vectors.and_then(|v| v.vectors_options) {
        Some(vectors::VectorsOptions::Vector(v)) => match v.vector {
            Some(vector::Vector::Dense(d)) => Ok(d.data),
            None if !v.data.is_empty() => Ok(v.data),
            _ => Err(Status::invalid_argument(
                "Wrong input: only dense vectors in this collection",
            )),
        },
        Some(vectors::VectorsOptions::Vectors(_)) => Err(Status::invalid_argument(
            "Wrong input: Not existing vector name error: the collection has one unnamed vector",
        )),
        None => Err(Status::invalid_argument(
            "Wrong input: a point needs a vector",
        )),
    }
}

/// A filter of keyword matches that must all hold (what Truffles sends),
/// in Qdrant's engine's terms.
fn keyword_filter(filter: Filter) -> Result<qdrant_edge::Filter, Status> {
    let unsupported =
        || Status::unimplemented("only must-match-keyword filters are part of the test server");
    if !filter.should.is_empty() || !filter.must_not.is_empty() || filter.min_should.is_some() {
        return Err(unsupported());
    }
    let mut conditions = Vec::new();
    for condition in filter.must {
        let Some(condition::ConditionOneOf::Field(field)) = condition.condition_one_of else {
            return Err(unsupported());
        };
        let Some(r#match::MatchValue::Keyword(value)) = field.r#match.and_then(|m| m.match_value)
        else {
            return Err(unsupported());
        };
        let key: qdrant_edge::JsonPath = field
            .key
            .parse()
            .map_err(|_| Status::invalid_argument(format!("Wrong input: bad key {}", field.key)))?;
        conditions.push(qdrant_edge::Condition::Field(
            qdrant_edge::FieldCondition::new_match(key, qdrant_edge::Match::from(value)),
        ));
    }
    Ok(qdrant_edge::Filter {
        must: Some(conditions),
        ..qdrant_edge::Filter::default()
    })
}

fn done() -> PointsOperationResponse {
    PointsOperationResponse {
        result: Some(UpdateResult {
            operation_id: Some(0),
            status: UpdateStatus::Completed as i32,
        }),
        ..PointsOperationResponse::default()
    }
}

impl Service {
    fn count_call(&self, method: &'static str) {
        *lock(&self.0).calls.entry(method).or_default() += 1;
    }

    fn shard(&self, name: &str) -> Result<(Arc<EdgeShard>, u64), Status> {
        let s = lock(&self.0);
        let c = s.collections.get(name).ok_or_else(|| not_found(name))?;
        Ok((c.shard.clone(), c.size))
    }

    /// Writes must wait for their application: the sync's "new points, then
    /// the old ones go" relies on it.
    fn check_wait(&self, method: &str, wait: Option<bool>) {
        if wait != Some(true) {
            lock(&self.0)
                .violations
                .push(format!("{method} without wait=true"));
        }
    }
}

#[tonic::async_trait]
impl Qdrant for Service {
    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckReply>, Status> {
        Ok(Response::new(HealthCheckReply {
            title: "qdrant - vector search engine".into(),
            version: "1.16.0".into(),
            commit: None,
        }))
    }
}

/// Methods Truffles never calls.
macro_rules! unimplemented_methods {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<$request>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$response>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async { Err(Status::unimplemented(concat!(stringify!($method), " is not part of the test server"))) })
            }
        )*
    };
}

#[tonic::async_trait]
impl Collections for Service {
    async fn get(
        &self,
        request: Request<GetCollectionInfoRequest>,
    ) -> Result<Response<GetCollectionInfoResponse>, Status> {
        self.count_call("collections.get");
        let name = request.into_inner().collection_name;
        let (shard, size, distance, indexes) = {
            let s = lock(&self.0);
            let c = s.collections.get(&name).ok_or_else(|| not_found(&name))?;
            (c.shard.clone(), c.size, c.distance, c.indexes.clone())
        };
        let points = shard
            .count(qdrant_edge::CountRequest {
                filter: None,
                exact: true,
            })
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(GetCollectionInfoResponse {
            result: Some(CollectionInfo {
                status: CollectionStatus::Green as i32,
                points_count: Some(points as u64),
                config: Some(CollectionConfig {
                    params: Some(CollectionParams {
                        shard_number: 1,
                        vectors_config: Some(VectorsConfig {
                            config: Some(vectors_config::Config::Params(VectorParams {
                                size,
                                distance,
                                ..VectorParams::default()
                            })),
                        }),
                        ..CollectionParams::default()
                    }),
                    ..CollectionConfig::default()
                }),
                payload_schema: indexes
                    .into_iter()
                    .map(|(field, kind)| {
                        (
                            field,
                            PayloadSchemaInfo {
                                data_type: kind,
                                ..PayloadSchemaInfo::default()
                            },
                        )
                    })
                    .collect(),
                ..CollectionInfo::default()
            }),
            ..GetCollectionInfoResponse::default()
        }))
    }

    async fn list(
        &self,
        _request: Request<ListCollectionsRequest>,
    ) -> Result<Response<ListCollectionsResponse>, Status> {
        let collections = lock(&self.0)
            .collections
            .keys()
            .map(|name| CollectionDescription { name: name.clone() })
            .collect();
        Ok(Response::new(ListCollectionsResponse {
            collections,
            ..ListCollectionsResponse::default()
        }))
    }

    async fn create(
        &self,
        request: Request<CreateCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        self.count_call("collections.create");
        let request = request.into_inner();
        let name = request.collection_name;
        let params = match request.vectors_config.and_then(|v| v.config) {
            Some(vectors_config::Config::Params(p)) => p,
            _ => {
                return Err(Status::invalid_argument(
                    "Wrong input: this server keeps one unnamed dense vector per collection",
                ));
            }
        };
        let distance = match Distance::try_from(params.distance) {
            Ok(Distance::Cosine) => EdgeDistance::Cosine,
            Ok(Distance::Dot) => EdgeDistance::Dot,
            Ok(Distance::Euclid) => EdgeDistance::Euclid,
            Ok(Distance::Manhattan) => EdgeDistance::Manhattan,
            _ => return Err(Status::invalid_argument("Wrong input: unknown distance")),
        };
        if params.size == 0 || params.size > 65536 {
            return Err(Status::invalid_argument(format!(
                "Validation error: vector size {} out of 1..65536",
                params.size
            )));
        }
        let mut s = lock(&self.0);
        if s.collections.contains_key(&name) {
            return Err(Status::already_exists(format!(
                "Wrong input: Collection `{name}` already exists!"
            )));
        }
        let dir = s
            .dir
            .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        let config = EdgeConfigBuilder::new()
            .vector(
                "",
                EdgeVectorParamsBuilder::new(params.size as usize, distance).build(),
            )
            .build();
        let shard = EdgeShard::new(&dir, config).map_err(|e| Status::internal(e.to_string()))?;
        s.collections.insert(
            name,
            Collection {
                shard: Arc::new(shard),
                size: params.size,
                distance: params.distance,
                indexes: BTreeMap::new(),
            },
        );
        Ok(Response::new(CollectionOperationResponse {
            result: true,
            ..CollectionOperationResponse::default()
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        self.count_call("collections.delete");
        let name = request.into_inner().collection_name;
        let removed = lock(&self.0).collections.remove(&name).is_some();
        Ok(Response::new(CollectionOperationResponse {
            result: removed,
            ..CollectionOperationResponse::default()
        }))
    }

    async fn collection_exists(
        &self,
        request: Request<CollectionExistsRequest>,
    ) -> Result<Response<CollectionExistsResponse>, Status> {
        let name = request.into_inner().collection_name;
        let exists = lock(&self.0).collections.contains_key(&name);
        Ok(Response::new(CollectionExistsResponse {
            result: Some(CollectionExists { exists }),
            ..CollectionExistsResponse::default()
        }))
    }

    unimplemented_methods! {
        update(UpdateCollection) -> CollectionOperationResponse;
        update_aliases(ChangeAliases) -> CollectionOperationResponse;
        list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
        list_aliases(ListAliasesRequest) -> ListAliasesResponse;
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
    }
}

#[tonic::async_trait]
impl Points for Service {
    async fn upsert(
        &self,
        request: Request<UpsertPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        self.count_call("points.upsert");
        let request = request.into_inner();
        self.check_wait("upsert", request.wait);
        let (shard, size) = self.shard(&request.collection_name)?;
        let mut points = Vec::with_capacity(request.points.len());
        for p in request.points {
            let vector = dense(p.vectors)?;
            if vector.len() as u64 != size {
                return Err(Status::invalid_argument(format!(
                    "Wrong input: Vector dimension error: expected dim: {size}, got {}",
                    vector.len()
                )));
            }
            let payload: serde_json::Map<String, serde_json::Value> = p
                .payload
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::from(v)))
                .collect();
            points.push(
                qdrant_edge::PointStruct::new(
                    edge_point_id(p.id)?,
                    vector,
                    serde_json::Value::Object(payload),
                )
                .into(),
            );
        }
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(done()))
    }

    async fn delete(
        &self,
        request: Request<DeletePoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        self.count_call("points.delete");
        let request = request.into_inner();
        self.check_wait("delete", request.wait);
        let (shard, _) = self.shard(&request.collection_name)?;
        let operation = match request.points.and_then(|p| p.points_selector_one_of) {
            Some(points_selector::PointsSelectorOneOf::Points(list)) => {
                PointOperations::DeletePoints {
                    ids: list
                        .ids
                        .into_iter()
                        .map(|id| edge_point_id(Some(id)))
                        .collect::<Result<Vec<_>, _>>()?,
                }
            }
            Some(points_selector::PointsSelectorOneOf::Filter(filter)) => {
                PointOperations::DeletePointsByFilter(keyword_filter(filter)?)
            }
            None => return Err(Status::invalid_argument("Wrong input: no points selector")),
        };
        shard
            .update(UpdateOperation::PointOperation(operation))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(done()))
    }

    async fn create_field_index(
        &self,
        request: Request<CreateFieldIndexCollection>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        self.count_call("points.create_field_index");
        let request = request.into_inner();
        let mut s = lock(&self.0);
        let name = request.collection_name;
        let c = s
            .collections
            .get_mut(&name)
            .ok_or_else(|| not_found(&name))?;
        let Some(kind) = request.field_type else {
            return Err(Status::invalid_argument(
                "Wrong input: a payload index needs field_type",
            ));
        };
        c.indexes.insert(request.field_name, kind);
        Ok(Response::new(done()))
    }

    async fn query(
        &self,
        request: Request<QueryPoints>,
    ) -> Result<Response<QueryResponse>, Status> {
        self.count_call("points.query");
        let request = request.into_inner();
        let (shard, size) = self.shard(&request.collection_name)?;
        let vector = match request.query.and_then(|q| q.variant).and_then(|v| match v {
            query::Variant::Nearest(input) => input.variant,
            _ => None,
        }) {
            Some(vector_input::Variant::Dense(d)) => d.data,
            _ => {
                return Err(Status::unimplemented(
                    "only nearest-vector queries are part of the test server",
                ));
            }
        };
        if vector.len() as u64 != size {
            return Err(Status::invalid_argument(format!(
                "Wrong input: Vector dimension error: expected dim: {size}, got {}",
                vector.len()
            )));
        }
        let with_payload = matches!(
            request.with_payload.and_then(|w| w.selector_options),
            Some(with_payload_selector::SelectorOptions::Enable(true))
        );
        let found = shard
            .query(QueryRequest {
                prefetches: vec![],
                query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                    query: vector.into(),
                    using: None,
                }))),
                filter: None,
                score_threshold: request.score_threshold.map(Into::into),
                // Qdrant's default limit.
                limit: request.limit.unwrap_or(10) as usize,
                offset: request.offset.unwrap_or(0) as usize,
                params: None,
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(with_payload),
            })
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let result = found
            .into_iter()
            .map(|p| {
                let payload = p
                    .payload
                    .map(|pl| serde_json::Value::Object(pl.0.into_iter().collect()))
                    .and_then(|json| ::qdrant_client::Payload::try_from(json).ok())
                    .map(HashMap::from)
                    .unwrap_or_default();
                ScoredPoint {
                    id: Some(grpc_point_id(p.id)),
                    payload,
                    score: p.score,
                    ..ScoredPoint::default()
                }
            })
            .collect();
        Ok(Response::new(QueryResponse {
            result,
            ..QueryResponse::default()
        }))
    }

    async fn count(
        &self,
        request: Request<CountPoints>,
    ) -> Result<Response<CountResponse>, Status> {
        self.count_call("points.count");
        let request = request.into_inner();
        let (shard, _) = self.shard(&request.collection_name)?;
        let count = shard
            .count(qdrant_edge::CountRequest {
                filter: None,
                exact: request.exact.unwrap_or(true),
            })
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(CountResponse {
            result: Some(CountResult {
                count: count as u64,
            }),
            ..CountResponse::default()
        }))
    }

    unimplemented_methods! {
        get(GetPoints) -> GetResponse;
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        set_payload(SetPayloadPoints) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search(SearchPoints) -> SearchResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        scroll(ScrollPoints) -> ScrollResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }
}
