//! The client side: register an identity, log in to get it back, change
//! the password, forget the server's copy.

use std::time::Duration;

use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, RegistrationResponse,
};
use peers_engine::Identity;
use rand_core_06::OsRng;
use tokio::net::TcpStream;

use crate::envelope::{PASSWORD_CHARS_MIN, RecoveryCode, Slot, check_user, open, seal_identity};
use crate::error::{Error, Result};
use crate::server::CONTEXT;
use crate::suite::{ClientConfig, Suite};
use crate::wire::{self, Direction, Message, Session, tag};

/// What opens a user's identity: the password or the recovery code.
#[derive(Clone, Copy, Debug)]
pub enum Secret<'a> {
    /// The password.
    Password(&'a str),
    /// The recovery code.
    Recovery(&'a RecoveryCode),
}

impl Secret<'_> {
    fn slot(&self) -> Slot {
        match self {
            Secret::Password(_) => Slot::Password,
            Secret::Recovery(_) => Slot::Recovery,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Secret::Password(password) => password.as_bytes(),
            Secret::Recovery(code) => code.as_bytes(),
        }
    }
}

/// Refuses a password under [`PASSWORD_CHARS_MIN`] characters.
pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < PASSWORD_CHARS_MIN {
        return Err(Error::WeakPassword(PASSWORD_CHARS_MIN));
    }
    Ok(())
}

struct Connection {
    stream: TcpStream,
    timeout: u64,
}

impl Connection {
    async fn open(address: &str, config: &ClientConfig) -> Result<Connection> {
        let stream = tokio::time::timeout(
            Duration::from_secs(config.timeout_secs),
            TcpStream::connect(address),
        )
        .await
        .map_err(|_| Error::Timeout(config.timeout_secs))??;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            timeout: config.timeout_secs,
        })
    }

    async fn send(&mut self, message: &Message) -> Result<()> {
        wire::write(&mut self.stream, message).await
    }

    async fn ask(&mut self, message: &Message) -> Result<Message> {
        self.send(message).await?;
        tokio::time::timeout(
            Duration::from_secs(self.timeout),
            wire::read(&mut self.stream),
        )
        .await
        .map_err(|_| Error::Timeout(self.timeout))?
    }
}

fn one(fields: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    fields
        .into_iter()
        .next()
        .ok_or(Error::Protocol("a missing field"))
}

/// Registers `user` on the key server at `address` (HOST:PORT) with
/// `password`, keeping `identity` sealed there; returns the recovery code,
/// the second way to open it (print it for the user: it is shown once).
pub async fn register(
    address: &str,
    config: &ClientConfig,
    user: &str,
    password: &str,
    identity: &Identity,
) -> Result<RecoveryCode> {
    check_user(user)?;
    check_password(password)?;
    let code = RecoveryCode::generate();
    let mut connection = Connection::open(address, config).await?;
    let password_start = ClientRegistration::<Suite>::start(&mut OsRng, password.as_bytes())?;
    let recovery_start = ClientRegistration::<Suite>::start(&mut OsRng, code.as_bytes())?;
    let answer = connection
        .ask(&Message::new(
            tag::REGISTER_START,
            vec![
                user.as_bytes().to_vec(),
                password_start.message.serialize().to_vec(),
                recovery_start.message.serialize().to_vec(),
            ],
        ))
        .await?;
    let fields = answer
        .expect(tag::REGISTERED_START, 2)
        .map_err(|error| match error {
            Error::Taken(_) => Error::Taken(user.to_owned()),
            other => other,
        })?;
    let ksf = config.ksf();
    let mut uploads = Vec::new();
    for ((state, secret, slot), response) in [
        (password_start.state, password.as_bytes(), Slot::Password),
        (
            recovery_start.state,
            code.as_bytes().as_slice(),
            Slot::Recovery,
        ),
    ]
    .into_iter()
    .zip(fields)
    {
        let bad = Error::answer("registration response");
        let response = RegistrationResponse::<Suite>::deserialize(&response).map_err(bad)?;
        let finish = state
            .finish(
                &mut OsRng,
                secret,
                response,
                ClientRegistrationFinishParameters::new(Default::default(), Some(&ksf)),
            )
            .map_err(Error::answer("registration response"))?;
        uploads.push(finish.message.serialize().to_vec());
        uploads.push(seal_identity(&finish.export_key, user, slot, identity).to_vec());
    }
    connection
        .ask(&Message::new(tag::REGISTER_FINISH, uploads))
        .await?
        .expect(tag::REGISTERED, 0)
        .map_err(|error| match error {
            Error::Taken(_) => Error::Taken(user.to_owned()),
            other => other,
        })?;
    Ok(code)
}

/// A logged-in session: the identity the envelope held, and the connection
/// for [`LoggedIn::change_password`] and [`LoggedIn::forget`].
pub struct LoggedIn {
    /// The user's identity.
    pub identity: Identity,
    /// Which secret logged in.
    pub slot: Slot,
    user: String,
    connection: Connection,
    session: Session,
    config: ClientConfig,
}

impl std::fmt::Debug for LoggedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoggedIn({}, {:?})", self.user, self.identity)
    }
}

/// Logs `user` in on the key server at `address` with the password or the
/// recovery code, and opens the identity. A wrong secret and an unknown user
/// fail alike ([`Error::LoginFailed`]).
pub async fn login(
    address: &str,
    config: &ClientConfig,
    user: &str,
    secret: Secret<'_>,
) -> Result<LoggedIn> {
    check_user(user)?;
    let slot = secret.slot();
    let mut connection = Connection::open(address, config).await?;
    let start = ClientLogin::<Suite>::start(&mut OsRng, secret.bytes())?;
    let answer = connection
        .ask(&Message::new(
            tag::LOGIN_START,
            vec![
                user.as_bytes().to_vec(),
                vec![slot as u8],
                start.message.serialize().to_vec(),
            ],
        ))
        .await?;
    let response =
        CredentialResponse::<Suite>::deserialize(&one(answer.expect(tag::CHALLENGE, 1)?)?)
            .map_err(Error::answer("login challenge"))?;
    let ksf = config.ksf();
    let finish = start
        .state
        .finish(
            &mut OsRng,
            secret.bytes(),
            response,
            ClientLoginFinishParameters::new(Some(CONTEXT), Default::default(), Some(&ksf)),
        )
        .map_err(Error::answer("login challenge"))?;
    let answer = connection
        .ask(&Message::new(
            tag::LOGIN_FINISH,
            vec![finish.message.serialize().to_vec()],
        ))
        .await?;
    if answer.tag == tag::ERROR {
        return Err(answer
            .expect(tag::ENVELOPE, 2)
            .err()
            .unwrap_or(Error::LoginFailed));
    }
    let mut session = Session::new(&finish.session_key, Direction::ToServer);
    let envelope = one(session.open(answer)?.expect(tag::ENVELOPE, 1)?)?;
    let secret_bytes = open(&finish.export_key, user, slot, &envelope)?;
    Ok(LoggedIn {
        identity: Identity::from_secret_bytes(secret_bytes),
        slot,
        user: user.to_owned(),
        connection,
        session,
        config: config.clone(),
    })
}

impl LoggedIn {
    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    async fn ask(&mut self, message: Message, expect: u8, fields: usize) -> Result<Vec<Vec<u8>>> {
        let message = self.session.seal(message);
        let answer = self.connection.ask(&message).await?;
        if answer.tag == tag::ERROR {
            return answer.expect(expect, fields + 1);
        }
        self.session.open(answer)?.expect(expect, fields)
    }

    /// Sets a new password (the identity is sealed anew under it); the
    /// recovery code stays as it was. Logged in with the recovery code, this
    /// is how a forgotten password is replaced.
    pub async fn change_password(&mut self, new_password: &str) -> Result<()> {
        check_password(new_password)?;
        let start = ClientRegistration::<Suite>::start(&mut OsRng, new_password.as_bytes())?;
        let fields = self
            .ask(
                Message::new(
                    tag::PASSWORD_START,
                    vec![start.message.serialize().to_vec()],
                ),
                tag::PASSWORD_RESPONSE,
                1,
            )
            .await?;
        let response = RegistrationResponse::<Suite>::deserialize(&one(fields)?)
            .map_err(Error::answer("registration response"))?;
        let ksf = self.config.ksf();
        let finish = start
            .state
            .finish(
                &mut OsRng,
                new_password.as_bytes(),
                response,
                ClientRegistrationFinishParameters::new(Default::default(), Some(&ksf)),
            )
            .map_err(Error::answer("registration response"))?;
        let envelope = seal_identity(
            &finish.export_key,
            &self.user,
            Slot::Password,
            &self.identity,
        );
        self.ask(
            Message::new(
                tag::PASSWORD_FINISH,
                vec![finish.message.serialize().to_vec(), envelope.to_vec()],
            ),
            tag::DONE,
            0,
        )
        .await?;
        Ok(())
    }

    /// Deletes the user's record (both envelopes) from the server.
    pub async fn forget(mut self) -> Result<()> {
        self.ask(Message::new(tag::FORGET, vec![]), tag::DONE, 0)
            .await?;
        Ok(())
    }
}
